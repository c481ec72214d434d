# The ingest service. Build from the repository root (the uv workspace):
#   docker build -f deploy/ingest.Dockerfile -t tally-ingest .
# Only shared/ and services/ingest/ go into the image, with the versions pinned in uv.lock.

FROM python:3.11-slim AS build
ARG UV_VERSION=0.13.9
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
# Bytecode compiled at build time, because the runtime user cannot write next to the code.
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, from the manifests and the lock alone, so that a code change reuses this layer.
# --frozen: the lock is the truth; uv neither re-resolves nor needs the workspace members left out of the image.
COPY pyproject.toml uv.lock ./
COPY shared/pyproject.toml shared/
COPY services/ingest/pyproject.toml services/ingest/
RUN uv sync --package tally-ingest --frozen --no-dev --no-install-workspace --no-cache
COPY shared/ shared/
COPY services/ingest/ services/ingest/
# --no-editable: the workspace packages are installed into the venv, so the runtime stage needs only the venv.
RUN uv sync --package tally-ingest --frozen --no-dev --no-editable --no-cache

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --no-create-home tally
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TALLY_INGEST_HOST=0.0.0.0 \
    TALLY_INGEST_PORT=8101
WORKDIR /app
USER tally
# 4317: OTLP/gRPC (TALLY_INGEST_GRPC_PORT), published by docker-compose.yml beside the gateway.
EXPOSE 8101 4317
# Each service migrates its own schema (under an advisory lock, so replicas may start together), then serves.
# exec: the server becomes PID 1 and gets SIGTERM directly for a graceful stop.
CMD ["sh", "-c", "python -m ingest migrate && exec python -m ingest serve"]
