"""Dockerfiles, rendered from the spec. Pure.

- ``docker/triton-vllm.Dockerfile``: ``nomad.triton_image`` with ``triton_models/``
  baked in at ``/models`` (for registries or air-gapped clusters; the Nomad jobs
  also deliver the same repository as templates, so the stock image works too).
  Its default command loads every model with explicit model control, which the
  vLLM backend's ``ENABLE_VLLM_HEALTH_CHECK`` needs to unload a dead engine's model
  (the Nomad jobs pass their own command line, ``caravan.nomad.triton_job``).
- ``docker/caravan.Dockerfile``: Caravan itself (control plane, autoscaler,
  replica simulator) on ``python:3.11-slim``; ``ENTRYPOINT ["caravan"]``.
Both build from the repository root (``docker build -f docker/<file> .``).
"""

from __future__ import annotations

from caravan.nomad.platform_jobs import CARAVAN_UID
from caravan.nomad.triton_job import GRPC_PORT, HTTP_PORT, METRICS_PORT
from caravan.render.triton import REPOSITORY
from caravan.spec import PlatformSpec

HEADER = "# Rendered by `caravan render` from the platform spec; do not edit by hand.\n"


def render(spec: PlatformSpec) -> dict[str, str]:
    return {
        "docker/triton-vllm.Dockerfile": triton_dockerfile(spec),
        "docker/caravan.Dockerfile": caravan_dockerfile(spec),
    }


def triton_dockerfile(spec: PlatformSpec) -> str:
    models = ", ".join(m.name for m in spec.models)
    return (
        HEADER
        + f"# Triton + vLLM with the model repository ({models}).\n"
        "# Build: docker build -f docker/triton-vllm.Dockerfile -t caravan-triton:<version> .\n"
        f"FROM {spec.nomad.triton_image}\n"
        f"COPY {REPOSITORY}/ /models/\n"
        "ENV HF_HOME=/model-cache/huggingface\n"
        "VOLUME /model-cache\n"
        f"EXPOSE {HTTP_PORT} {GRPC_PORT} {METRICS_PORT}\n"
        'CMD ["tritonserver", "--model-repository=/models", '
        '"--model-control-mode=explicit", "--load-model=*", '
        f'"--grpc-port={GRPC_PORT}", "--http-port={HTTP_PORT}", '
        f'"--metrics-port={METRICS_PORT}", "--allow-metrics=true", "--allow-gpu-metrics=true"]\n'
    )


def caravan_dockerfile(spec: PlatformSpec) -> str:
    return (
        HEADER
        + "# Caravan: xDS control plane, autoscaler, replica simulator, bench.\n"
        f"# Build: docker build -f docker/caravan.Dockerfile -t {spec.nomad.caravan_image} .\n"
        "FROM python:3.11-slim\n"
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CARAVAN_WASM_CACHE=/opt/caravan/wasm\n"
        "WORKDIR /src\n"
        "COPY pyproject.toml README.md ./\n"
        "COPY src/ src/\n"
        "RUN pip install --no-cache-dir . && rm -rf /src\n"
        "# Envoy's proxy-wasm filters (inference rate limit, prefix key), compiled at install time\n"
        "RUN python -m caravan.wasm.build\n"
        "WORKDIR /app\n"
        f"RUN useradd --system --uid {CARAVAN_UID} caravan\n"
        "USER caravan\n"
        'ENTRYPOINT ["caravan"]\n'
        'CMD ["--help"]\n'
    )
