"""Strategy service: turns market data into triggers and proposes trades above the conviction threshold."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.strategy.api import EVALUATE_MAX_BYTES, router
from services.strategy.cycle import CycleRunner, lead_forever
from services.strategy.metrics import StrategyMetrics
from services.strategy.policy import PolicyStore
from services.strategy.settings import StrategySettings
from shared.app import build_app, dependency_check, exchange_check
from shared.exchange.factory import api_key, create_exchange_client
from shared.lock import RedisLock
from shared.quota import default_client_id
from shared.redis import KeySpace
from shared.settings import load_settings


def create_app(settings: StrategySettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(StrategySettings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = StrategyMetrics(registry, settings.latency.stage_budgets)
    key = api_key(settings)
    interval = settings.strategy.cycle_interval_s

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exchange = create_exchange_client(settings, settings.ratelimit, registry, key)
        keys = KeySpace(settings.key_prefix, "strategy")
        policy = PolicyStore(app.state.redis, keys, settings.strategy)
        app.state.runner = CycleRunner(
            app.state.redis,
            keys,
            settings=settings,
            http=app.state.http,
            exchange=exchange,
            metrics=metrics,
            policy=policy,
        )
        # The lease runs out after half a cycle, so a replica takes over within a cycle of the leader's death.
        lease = RedisLock(
            app.state.redis, keys.key("leader"), owner=default_client_id(), timeout_s=max(interval / 2, 1)
        )
        leading = asyncio.get_running_loop().create_task(
            lead_forever(app.state.runner, lease, interval_s=interval, metrics=metrics)
        )
        try:
            yield
        finally:
            leading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await leading
            await exchange.aclose()
            await exchange.quota.aclose()

    return build_app(
        settings,
        description="Scores triggers' conviction and proposes trades at or above `min_conviction_to_propose`.",
        routers=[router],
        registry=registry,
        lifespan=lifespan,
        body_limits={"/v1/evaluate": EVALUATE_MAX_BYTES},
        operator_routes=("PUT /v1/policy",),
        checks=[
            dependency_check("ratelimit", settings.ratelimit_url),
            dependency_check("universe", settings.universe_url),
            dependency_check("executor", settings.executor_url),
            exchange_check(settings.exchange_api_url),
        ],
    )
