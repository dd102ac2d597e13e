"""Ratelimit service: hands out exchange API quota per endpoint to every service and replica."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ratelimit.api import router
from services.ratelimit.fastpath import MAX_BODY_BYTES, PATH, AcquireFastPath
from services.ratelimit.limiter import Limiter
from services.ratelimit.metrics import RatelimitMetrics
from services.ratelimit.settings import RatelimitSettings
from shared.app import build_app
from shared.redis import KeySpace
from shared.settings import load_settings


def create_app(settings: RatelimitSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(RatelimitSettings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = RatelimitMetrics(registry, settings.ratelimit)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = Limiter(
            app.state.redis, settings.ratelimit, KeySpace(settings.key_prefix, "ratelimit"), metrics
        )
        yield

    async def refresh_gauges(app: FastAPI) -> None:
        await app.state.limiter.refresh_gauges()

    return build_app(
        settings,
        description="The single source of exchange API quota, shared through Redis by every replica.",
        routers=[router],
        registry=registry,
        lifespan=lifespan,
        before_scrape=refresh_gauges,
        operator_routes=("PUT /v1/limits", "DELETE /v1/limits"),
        body_limits={PATH: MAX_BODY_BYTES},
    )


def with_fast_path(app: FastAPI) -> AcquireFastPath:
    """The app as served: the hot acquire route in bare ASGI, in front of everything else."""
    return AcquireFastPath(app, token=app.state.settings.trader_api_token)
