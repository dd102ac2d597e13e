"""Exchange simulator: a Coinbase Advanced Trade-compatible exchange, the stack's default."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.exchange_sim.api import V2_PREFIX, CoinbaseError, RawAnswer, config_router, router, sim_router
from services.exchange_sim.auth import NonceRegistry
from services.exchange_sim.clock import SimClock
from services.exchange_sim.exchange import SimExchange
from services.exchange_sim.faults import FaultInjector
from services.exchange_sim.metrics import SimMetrics
from services.exchange_sim.runtime import SimRuntime
from services.exchange_sim.settings import SimSettings
from services.exchange_sim.store import SimStore, StoreUnavailable
from services.exchange_sim.throttle import SlidingWindow
from services.exchange_sim.v2 import v2_router
from shared.app import build_app
from shared.redis import KeySpace
from shared.settings import load_settings

log = logging.getLogger(__name__)
COINBASE_PREFIX = "/api/v3/"
MATCH_INTERVAL_S = 0.5


class CallRecorder:
    """Counts every Coinbase API call by endpoint and status (the ones refused before the route ran too), and
    adds the x-ratelimit headers that private calls carry."""

    def __init__(self, app: ASGIApp, metrics: SimMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(COINBASE_PREFIX):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = scope.get("state", {}).get("ratelimit_headers")
                if extra:
                    message["headers"] = [
                        *message.get("headers", []),
                        *((k.encode(), v.encode()) for k, v in extra.items()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "name", None) or "unknown"
            self.metrics.request(endpoint, status, time.perf_counter() - started)


async def match_forever(sim: SimExchange) -> None:
    """Fill resting limit orders as the market reaches them."""
    while True:
        await asyncio.sleep(MATCH_INTERVAL_S)
        try:
            await sim.match_resting()
        except Exception:  # keep matching after a Redis hiccup; the next pass retries
            log.warning("matching resting orders failed", exc_info=True)


def create_app(settings: SimSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(SimSettings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = SimMetrics(registry)
    config = settings.exchange_sim

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = SimStore(app.state.redis, KeySpace(settings.key_prefix, "exchange_sim"))
        sim = SimExchange(settings, store, SimClock(settings.sim_speed))
        await sim.load()
        app.state.sim = SimRuntime(
            exchange=sim,
            config=config,
            metrics=metrics,
            faults=FaultInjector(config.faults, random.Random(settings.sim_seed)),
            public_window=SlidingWindow(config.rate_limits.public_per_s),
            private_window=SlidingWindow(config.rate_limits.private_per_s),
            nonces=NonceRegistry() if config.reject_replayed_jwt else None,
        )
        matcher = asyncio.create_task(match_forever(sim))
        try:
            yield
        finally:
            matcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await matcher

    app = build_app(
        settings,
        description="Serves Coinbase Advanced Trade's REST paths and JSON shapes so the stack runs without keys.",
        routers=[router, v2_router, sim_router, config_router],
        registry=registry,
        lifespan=lifespan,
        protected=("/v1/", "/sim/"),
    )

    @app.exception_handler(CoinbaseError)
    async def _coinbase_error(request: Request, exc: CoinbaseError) -> JSONResponse:
        return exc.response(request.url.path)

    @app.exception_handler(StoreUnavailable)
    async def _store_down(request: Request, exc: StoreUnavailable) -> JSONResponse:
        log.warning("simulator state could not be read or saved: %s", exc)
        unavailable = CoinbaseError(503, "UNAVAILABLE", "the exchange could not serve the request; try again")
        return unavailable.response(request.url.path)

    @app.exception_handler(RawAnswer)
    async def _raw(_: Request, exc: RawAnswer) -> Response:
        return Response(exc.body, status_code=exc.status, media_type=exc.media_type)

    shared_validation = app.exception_handlers[RequestValidationError]

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Any:
        if not request.url.path.startswith((COINBASE_PREFIX, V2_PREFIX)):
            return await shared_validation(request, exc)
        problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in exc.errors())
        return CoinbaseError(400, "INVALID_ARGUMENT", problems).response(request.url.path)

    app.add_middleware(CallRecorder, metrics=metrics)
    return app
