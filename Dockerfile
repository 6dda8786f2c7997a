# Easel on a CUDA runtime. Build: docker build -t easel .
# Run:   docker run --gpus all --env-file .env -v easel-data:/data -v /path/to/models:/models \
#          --stop-timeout 40 --restart unless-stopped easel
#        (a stop takes Easel up to 28 s: docker's default 10 s would cut it short). The user is
#        uid 10001: a host folder bind-mounted as /data must be writable by it (chown 10001).
# With a broker and one worker per GPU: docker-compose.yml (docs/deployment.md).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    EASEL_DATA_DIR=/data \
    EASEL_MODELS_DIR=/models \
    EASEL_WILDCARDS_DIR=/wildcards \
    EASEL_METRICS_ADDR=0.0.0.0:9100

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/easel
ENV PATH=/opt/easel/bin:$PATH

WORKDIR /app
# The dependencies first, from pyproject.toml alone (no code copied yet, and an empty stand-in
# for the README it names, so the project installs empty and is removed again): a change to
# the code or the README rebuilds only the layers below, never torch's.
# torch and torchvision from the CUDA 12.6 index that matches the base image; torchao (quant)
# for EASEL_QUANTIZE=int8|fp8.
COPY pyproject.toml ./
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
RUN touch README.md \
    && pip install --extra-index-url "$TORCH_INDEX" ".[distributed,quant]" \
    && pip uninstall --yes easel \
    && rm -rf README.md build easel.egg-info
COPY README.md ./
COPY bot/ bot/
COPY cogs/ cogs/
COPY db/ db/
COPY inference/ inference/
RUN pip install --no-deps .

RUN useradd --create-home --uid 10001 easel \
    && mkdir -p /data /models /wildcards \
    && chown easel:easel /data /models /wildcards
USER easel

VOLUME ["/data", "/models"]
# /metrics for Prometheus, /healthz for the check below (200 once connected to Discord or NATS).
EXPOSE 9100
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["easel", "health"]
CMD ["easel", "run"]
