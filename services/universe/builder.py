"""Builds the universe (product list, filters, one best_bid_ask call) and keeps the latest build in Redis."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel
from redis.asyncio import Redis

from services.universe.cache import ProductCache, ProductsUnavailable
from services.universe.filters import Exclusion, Member, rank, screen
from services.universe.metrics import UniverseMetrics
from services.universe.settings import UniverseSettings
from shared.errors import TraderError
from shared.exchange.client import ExchangeClient
from shared.exchange.models import Product
from shared.exchange.responses import read_products
from shared.redis import KeySpace

log = logging.getLogger(__name__)


class Build(BaseModel):
    """One build of the universe, as kept in Redis and served by the API."""

    built_at: float
    products_fetched_at: float
    ttl_s: float
    stale: bool
    error: str | None
    build_seconds: float
    members: list[Member]
    excluded: list[Exclusion]


class UniverseBuilder:
    def __init__(
        self,
        redis: Redis,
        keys: KeySpace,
        *,
        cache: ProductCache,
        exchange: ExchangeClient,
        settings: UniverseSettings,
        metrics: UniverseMetrics,
        clock: Callable[[], float] = time.time,
    ):
        self.redis = redis
        self.build_key = keys.key("build")
        self.invalidated_key = keys.key("build", "invalidated")
        self.first_seen_key = keys.key("first_seen")
        self.cache = cache
        self.exchange = exchange
        self.config = settings.universe
        self.budget_s = settings.latency.stage_budgets.universe_build
        self.metrics = metrics
        self.clock = clock
        self._running: asyncio.Task[Build] | None = None

    async def current(self) -> Build:
        """The latest build from Redis; built now (once in this process, however many callers ask) when there
        is none or it was invalidated."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.build_key)
        pipe.exists(self.invalidated_key)
        raw, invalidated = await pipe.execute()
        if raw is not None and not invalidated:
            return Build.model_validate_json(raw)
        return await self.rebuild()

    async def rebuild(self) -> Build:
        """Build again; concurrent callers in this process share one build. When the build fails, the previous
        one is kept, marked stale with the error; with none, the error is raised."""
        if self._running is None or self._running.done():
            self._running = asyncio.get_running_loop().create_task(self._build_or_keep())
        return await asyncio.shield(self._running)

    async def invalidate(self) -> None:
        """The next request rebuilds from a freshly fetched product list (the build stays, for stale-if-error)."""
        await self.cache.invalidate()
        await self.redis.set(self.invalidated_key, "1")

    async def _build_or_keep(self) -> Build:
        try:
            build = await self._build()
        except TraderError as exc:
            raw = await self.redis.get(self.build_key)
            if raw is None:
                if isinstance(exc, ProductsUnavailable):
                    raise
                raise ProductsUnavailable(
                    f"no universe yet: the build failed ({exc.message})", details={"error": exc.message}
                ) from exc
            build = Build.model_validate_json(raw).model_copy(update={"stale": True, "error": exc.message})
            log.warning("universe build failed, keeping the previous one marked stale: %s", exc.message)
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.build_key, build.model_dump_json())
        pipe.delete(self.invalidated_key)
        await pipe.execute()
        self.metrics.stale.set(1 if build.stale else 0)
        return build

    async def _build(self) -> Build:
        started = time.perf_counter()
        listing = await self.cache.get()
        products, unreadable = read_products(listing.products)
        now = self.clock()
        first_seen = await self._first_seen(products, now) if self.config.min_listing_age_days else {}
        candidates, excluded = screen(products, unreadable, self.config, first_seen=first_seen, now=now)
        books = await self.exchange.best_bid_ask([p.product_id for p in candidates]) if candidates else []
        members, unranked = rank(candidates, {book.product_id: book for book in books}, self.config)
        excluded += unranked
        seconds = time.perf_counter() - started
        self._observe(members, excluded, seconds)
        return Build(
            built_at=now,
            products_fetched_at=listing.fetched_at,
            ttl_s=listing.ttl_s,
            stale=listing.stale,
            error=listing.error,
            build_seconds=round(seconds, 4),
            members=members,
            excluded=excluded,
        )

    async def _first_seen(self, products: list[Product], now: float) -> dict[str, float]:
        """When each product was first seen; the products of the first list ever fetched count as old."""
        first_build = not await self.redis.exists(self.first_seen_key)
        since = repr(0.0 if first_build else now)
        pipe = self.redis.pipeline(transaction=False)
        for product in products:
            pipe.hsetnx(self.first_seen_key, product.product_id, since)
        pipe.hgetall(self.first_seen_key)
        *_, seen = await pipe.execute()
        return {key.decode(): float(value) for key, value in seen.items()}

    def _observe(self, members: list[Member], excluded: list[Exclusion], seconds: float) -> None:
        self.metrics.build_seconds.observe(seconds)
        if seconds > self.budget_s:
            self.metrics.budget_exceeded.inc()
            log.warning("universe build took %.2fs, over its budget of %.2fs", seconds, self.budget_s)
        tiers = Counter(member.tier for member in members)
        for tier in ("core", "rotational"):
            self.metrics.size.labels(tier).set(tiers[tier])
        reasons = Counter(exclusion.reason for exclusion in excluded)
        self.metrics.excluded.clear()
        for reason, count in reasons.items():
            self.metrics.excluded.labels(reason).set(count)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
