# syntax=docker/dockerfile:1
# One image per service: docker build --build-arg SERVICE=ratelimit --build-arg PORT=8001 .
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PATH=/app/.venv/bin:$PATH

RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore uv==0.13.9 \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-log-init --no-create-home --shell /usr/sbin/nologin app

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the lock changes, and is shared by all five images.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

COPY shared/ shared/
COPY services/ services/
COPY config/ config/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# Declared late so the layers above are cached across services.
ARG SERVICE
ARG PORT
RUN test -n "$SERVICE" && test -f "services/$SERVICE/__main__.py" && test -n "$PORT" \
    || { echo "build with --build-arg SERVICE=<name> --build-arg PORT=<contract port>" >&2; exit 1; }
# Inside a container the service listens on every interface; compose publishes the port on 127.0.0.1 only.
ENV SERVICE=${SERVICE} \
    PORT=${PORT} \
    BIND_HOST=0.0.0.0 \
    CONFIG_DIR=/app/config

USER 10001:10001
EXPOSE ${PORT}

HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/healthz', timeout=2)"]

# exec: python becomes PID 1 and receives SIGTERM, so /readyz drains before shutdown.
CMD ["sh", "-c", "exec python -m services.${SERVICE}"]
