# finsignal services: one image, the command picks the service.
FROM python:3.11-slim AS base

# Set TORCH_INDEX_URL to PyTorch's CPU wheel index for an image without CUDA libraries.
ARG TORCH_INDEX_URL=""
# Optional extras of the package, e.g. "gpu" for the vLLM backend (compose's worker-gpu service).
ARG FINSIGNAL_EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    FINSIGNAL_LOG_FORMAT=json FINSIGNAL_CACHE_DIR=/var/lib/finsignal/cache

RUN apt-get update && apt-get install -y --no-install-recommends redis-tools curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"; \
    else pip install torch==2.13.0; fi
COPY pyproject.toml README.md ./
COPY ingest ./ingest
COPY signals ./signals
COPY compressor ./compressor
COPY consumers ./consumers
COPY finsignal ./finsignal
RUN pip install ".${FINSIGNAL_EXTRAS:+[$FINSIGNAL_EXTRAS]}"

RUN useradd --create-home --uid 10001 finsignal && mkdir -p /var/lib/finsignal && chown finsignal /var/lib/finsignal
USER finsignal
ENTRYPOINT ["finsignal"]
CMD ["--help"]
