"""Universe service: builds the tradable universe from the exchange's product list, cached in Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.universe.api import router
from services.universe.builder import Build, UniverseBuilder
from services.universe.cache import ProductCache
from services.universe.filters import products_ttl_s, screen
from services.universe.metrics import UniverseMetrics
from services.universe.settings import UniverseSettings
from shared.app import build_app, dependency_check, exchange_check
from shared.errors import TraderError
from shared.exchange.factory import api_key, create_exchange_client
from shared.exchange.responses import read_products
from shared.quota import default_client_id
from shared.redis import KeySpace
from shared.settings import load_settings

log = logging.getLogger(__name__)


async def refresh_forever(builder: UniverseBuilder, interval_s: float) -> None:
    """Rebuild every interval, so requests are answered from Redis and never wait on the exchange."""
    while True:
        try:
            await builder.rebuild()
        except TraderError as exc:
            log.warning("background universe build failed: %s", exc.message)
        except Exception:  # keep refreshing after an unexpected failure; it is logged with its traceback
            log.exception("background universe build failed")
        await asyncio.sleep(interval_s)


def create_app(settings: UniverseSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(UniverseSettings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = UniverseMetrics(registry)
    config = settings.universe
    key = api_key(settings)

    def ttl_for(raw: list[dict[str, Any]]) -> float:
        candidates, _ = screen(*read_products(raw), config, first_seen={}, now=time.time())
        return products_ttl_s(candidates, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exchange = create_exchange_client(settings, settings.ratelimit, registry, key)
        keys = KeySpace(settings.key_prefix, "universe")
        cache = ProductCache(
            app.state.redis,
            keys,
            fetch=exchange.product_listing,
            ttl_for=ttl_for,
            enabled=config.products_cache_minutes > 0,
            owner=default_client_id(),
            lock_timeout_s=config.lock_timeout_s,
            wait_s=config.build_wait_s,
            on_result=metrics.cache_result,
        )
        app.state.builder = UniverseBuilder(
            app.state.redis, keys, cache=cache, exchange=exchange, settings=settings, metrics=metrics
        )
        refresher = asyncio.get_running_loop().create_task(
            refresh_forever(app.state.builder, config.refresh_interval_s)
        )
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await exchange.aclose()
            await exchange.quota.aclose()

    async def before_scrape(app: FastAPI) -> None:
        builder: UniverseBuilder = app.state.builder
        raw = await app.state.redis.get(builder.build_key)
        if raw is not None:
            build = Build.model_validate_json(raw)
            metrics.products_age.set(time.time() - build.products_fetched_at)
            metrics.cache_ttl.set(build.ttl_s)
            metrics.stale.set(1 if build.stale else 0)

    return build_app(
        settings,
        description="Builds the tradable universe from the exchange's product list, cached in Redis.",
        routers=[router],
        registry=registry,
        lifespan=lifespan,
        before_scrape=before_scrape,
        operator_routes=("POST /v1/cache/invalidate",),
        checks=[
            dependency_check("ratelimit", settings.ratelimit_url),
            exchange_check(settings.exchange_api_url),
        ],
    )
