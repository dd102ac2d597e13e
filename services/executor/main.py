"""Executor service: checks proposals against the risk limits and places orders on the exchange."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.executor.api import router
from services.executor.ledger import Ledger, closed_summary
from services.executor.metrics import ExecutorMetrics
from services.executor.orders import Executor, watch_positions
from services.executor.settings import ExecutorSettings
from shared.app import build_app, dependency_check, exchange_check
from shared.exchange.factory import api_key, create_exchange_client
from shared.quota import default_client_id
from shared.redis import KeySpace
from shared.settings import load_settings


def create_app(settings: ExecutorSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(ExecutorSettings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ExecutorMetrics(registry)
    key = api_key(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        exchange = create_exchange_client(settings, settings.ratelimit, registry, key)
        ledger = Ledger(app.state.redis, KeySpace(settings.key_prefix, "executor"))
        app.state.executor = Executor(
            app.state.redis,
            ledger=ledger,
            exchange=exchange,
            settings=settings,
            metrics=metrics,
            consumer=default_client_id(),
        )
        loop = asyncio.get_running_loop()
        tasks = [
            loop.create_task(app.state.executor.work_forever()),
            loop.create_task(watch_positions(app.state.executor, interval_s=settings.worker.monitor_interval_s)),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await exchange.aclose()
            await exchange.quota.aclose()

    async def before_scrape(app: FastAPI) -> None:
        ledger: Ledger = app.state.executor.ledger
        metrics.trades_per_hour.set(await ledger.trades_last_hour())
        positions = await ledger.positions()
        metrics.open_positions.set(len(positions))
        metrics.halted.set(1 if await ledger.halted() else 0)
        closed = closed_summary(await ledger.trades())
        metrics.realized.set(float(closed.realized))
        metrics.win_rate.set(closed.win_rate)

    return build_app(
        settings,
        description="Checks proposals against the risk limits and places orders on the exchange, exactly once.",
        routers=[router],
        registry=registry,
        lifespan=lifespan,
        before_scrape=before_scrape,
        operator_routes=("POST /v1/halt", "POST /v1/resume"),
        checks=[
            dependency_check("ratelimit", settings.ratelimit_url),
            exchange_check(settings.exchange_api_url),
        ],
    )
