"""The app factory every service uses: lifespan, health, readiness, metrics, errors, auth on writes."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics, generate_latest
from prometheus_fastapi_instrumentator import Instrumentator
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import TraderError
from shared.http import create_http_client
from shared.logging import configure_logging, register_secret
from shared.metrics import register_service_info
from shared.middleware import DEFAULT_MAX_BODY_BYTES, RequestGuard
from shared.redis import create_redis
from shared.settings import ServiceSettings

log = logging.getLogger(__name__)

# An async hook on the app: readiness checks, and the refresh some services run before a scrape.
ReadinessCheck = Callable[[FastAPI], Awaitable[None]]
ServiceLifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

READINESS_TIMEOUT_S = 1.5
# What a validation error echoes of the value sent: enough to recognise it, never the whole of a huge input.
ECHO_CHARS = 200

# Documents the token in OpenAPI; RequestGuard enforces it before the body is read.
_bearer = HTTPBearer(auto_error=False, description="TRADER_API_TOKEN; required on every write under /v1")


class ErrorJSON(JSONResponse):
    """Error bodies repeat what was sent: strict JSON whatever it held (NaN, a lone surrogate)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_strict(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _strict(value: Any) -> Any:
    """Non-finite numbers as text, and a lone surrogate (valid in a JSON escape, not in UTF-8) as its escape."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_strict(str(k)): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> JSONResponse:
    """The one JSON error shape of the stack."""
    return ErrorJSON({"error": code, "message": message, "details": details or {}}, status_code=status)


def echo(value: Any) -> Any:
    """A bounded, JSON-safe copy of an input value for an error message."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else str(value)
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, default=str)
        if len(text) <= ECHO_CHARS:
            return json.loads(text)
    return text if len(text) <= ECHO_CHARS else f"{text[:ECHO_CHARS]}... ({len(text)} characters)"


def _field_name(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TraderError)
    async def _trader_error(_: Request, exc: TraderError) -> JSONResponse:
        return ErrorJSON(exc.to_body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = []
        for err in exc.errors():
            entry: dict[str, Any] = {"field": _field_name(err["loc"]), "message": err["msg"]}
            if err["type"] != "missing" and "input" in err:
                entry["value"] = echo(err["input"])
            fields.append(entry)
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields)
        return error_response(422, "validation_error", f"invalid request: {summary}", {"fields": fields})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message)

    @app.exception_handler(RedisError)
    async def _redis_down(request: Request, exc: RedisError) -> JSONResponse:
        # Redis restarting or failing over: the caller may try again in a moment
        log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(503, "unavailable", f"Redis is unavailable ({type(exc).__name__}); try again shortly")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"unexpected {type(exc).__name__}; see the service log")


async def _check_redis(app: FastAPI) -> None:
    await app.state.redis.ping()


EXCHANGE_TIME_PATH = "/api/v3/brokerage/time"
# The exchange's success is remembered this long: a probe every few seconds per pod would otherwise spend the
# exchange's public budget (10/s per IP) outside the quota, a share that grows with every replica.
EXCHANGE_CHECK_MAX_AGE_S = 30.0


def dependency_check(
    name: str, url: str, path: str = "/healthz", *, max_age_s: float = 0.0, clock: Callable[[], float] = time.monotonic
) -> tuple[str, ReadinessCheck]:
    """A readiness check that another service (or the exchange, on its time path) answers; with `max_age_s`, a
    success stands for that long before the dependency is asked again (a failure is asked again at once, so a
    service comes ready as soon as its dependency does)."""
    answered_at: list[float] = []

    async def check(app: FastAPI) -> None:
        if answered_at and clock() - answered_at[0] < max_age_s:
            return
        response = await app.state.http.get(f"{url.rstrip('/')}{path}", timeout=READINESS_TIMEOUT_S)
        response.raise_for_status()
        answered_at[:] = [clock()]

    return name, check


def exchange_check(url: str) -> tuple[str, ReadinessCheck]:
    """The readiness check that the exchange answers on its time path, asked at most every 30 s."""
    return dependency_check("exchange", url, EXCHANGE_TIME_PATH, max_age_s=EXCHANGE_CHECK_MAX_AGE_S)


async def _run_check(app: FastAPI, check: ReadinessCheck) -> str:
    try:
        await asyncio.wait_for(check(app), READINESS_TIMEOUT_S)
    except Exception as exc:  # any failure makes the component unready; the reason is reported
        return f"{type(exc).__name__}: {exc}".strip().rstrip(":") or type(exc).__name__
    return "ok"


def build_app(
    settings: ServiceSettings,
    *,
    description: str,
    routers: Sequence[APIRouter] = (),
    registry: CollectorRegistry | None = None,
    checks: Sequence[tuple[str, ReadinessCheck]] = (),
    lifespan: ServiceLifespan | None = None,
    protected: tuple[str, ...] = ("/v1/",),
    operator_routes: tuple[str, ...] = (),
    before_scrape: ReadinessCheck | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_limits: Mapping[str, int] | None = None,
) -> FastAPI:
    """Assemble a service: shared plumbing plus the service's routers, checks and lifespan."""
    # `*_created` series double every counter's cardinality and no dashboard reads them.
    disable_created_metrics()
    registry = registry if registry is not None else CollectorRegistry()
    register_service_info(registry, settings)
    service = settings.service_name

    @asynccontextmanager
    async def app_lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service, settings.log_level)
        register_secret(settings.trader_api_token)
        register_secret(settings.trader_operator_token)
        app.state.redis = create_redis(settings.redis_url)
        app.state.http = create_http_client(timeout_s=settings.http_timeout_s)
        try:
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    log.info("%s started on port %d (mode %s)", service, settings.port, settings.trading_mode)
                    yield
        finally:
            await app.state.http.aclose()
            await app.state.redis.aclose()

    # Swagger UI's assets come from the service itself, so /docs works without internet.
    app = FastAPIOffline(
        docs_url="/docs",
        redoc_url=None,
        title=f"trader {service}",
        description=description,
        version="0.1.0",
        lifespan=app_lifespan,
        dependencies=[Depends(_bearer)],
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.draining = False
    all_checks = [("redis", _check_redis), *checks]

    @app.get("/healthz", tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["ops"], summary="Readiness: config loaded, Redis and dependencies reachable")
    async def readyz() -> JSONResponse:
        results = await asyncio.gather(*(_run_check(app, check) for _, check in all_checks))
        status = {"config": "ok"} | {name: result for (name, _), result in zip(all_checks, results, strict=True)}
        if app.state.draining:
            status["shutdown"] = "draining: SIGTERM received"
        failing = [name for name, result in status.items() if result != "ok"]
        if failing:
            reasons = ", ".join(f"{name} ({status[name]})" for name in failing)
            return error_response(503, "not_ready", f"not ready: {reasons}", {"failing": failing, "checks": status})
        return JSONResponse({"status": "ready", "service": service, "checks": status})

    for router in routers:
        app.include_router(router)

    install_error_handlers(app)
    Instrumentator(
        registry=registry,
        excluded_handlers=["/metrics", "/healthz", "/readyz"],
        should_group_status_codes=False,
    ).instrument(app, metric_namespace="", metric_subsystem="")

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics: HTTP plus the service's trader_* series")
    async def metrics() -> Response:
        if before_scrape is not None:
            try:
                await before_scrape(app)
            except Exception:  # a scrape still returns what this process knows
                log.warning("refreshing metrics before the scrape failed", exc_info=True)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(
        RequestGuard,
        token=settings.trader_api_token,
        operator_token=settings.trader_operator_token,
        protected=protected,
        operator_routes=operator_routes,
        max_body_bytes=max_body_bytes,
        body_limits=body_limits,
    )
    return app
