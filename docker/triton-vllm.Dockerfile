# Rendered by `caravan render` from the platform spec; do not edit by hand.
# Triton + vLLM with the model repository (llama-3-8b, qwen-2-vl-7b).
# Build: docker build -f docker/triton-vllm.Dockerfile -t caravan-triton:<version> .
FROM nvcr.io/nvidia/tritonserver:25.01-vllm-python-py3
COPY triton_models/ /models/
ENV HF_HOME=/model-cache/huggingface
VOLUME /model-cache
EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--model-control-mode=explicit", "--load-model=*", "--grpc-port=8001", "--http-port=8000", "--metrics-port=8002", "--allow-metrics=true", "--allow-gpu-metrics=true"]
