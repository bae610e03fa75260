# Rendered by `caravan render` from the platform spec; do not edit by hand.
# Caravan: xDS control plane, autoscaler, replica simulator, bench.
# Build: docker build -f docker/caravan.Dockerfile -t caravan:0.1.0 .
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 CARAVAN_WASM_CACHE=/opt/caravan/wasm
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
RUN pip install --no-cache-dir . && rm -rf /src
# Envoy's proxy-wasm filters (inference rate limit, prefix key), compiled at install time
RUN python -m caravan.wasm.build
WORKDIR /app
RUN useradd --system --uid 10001 caravan
USER caravan
ENTRYPOINT ["caravan"]
CMD ["--help"]
