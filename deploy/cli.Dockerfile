# The `tally` command, for the one-shot jobs of docker-compose: `init` (create the topics, migrate the identity
# schema) and the health aggregator behind the gateway's /api/public/health. Build from the repository root:
#   docker build -f deploy/cli.Dockerfile -t tally-cli .

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
COPY cli/pyproject.toml cli/
RUN uv sync --package tally-cli --frozen --no-dev --no-install-workspace --no-cache
COPY shared/ shared/
COPY cli/ cli/
# --no-editable: the workspace packages are installed into the venv, so the runtime stage needs only the venv.
RUN uv sync --package tally-cli --frozen --no-dev --no-editable --no-cache

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --no-create-home tally
COPY --from=build /app/.venv /app/.venv
ENV PATH="/app/.venv/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TALLY_HOME=/tmp/tally
WORKDIR /app
USER tally
CMD ["python", "-m", "tally_cli.main", "init"]
