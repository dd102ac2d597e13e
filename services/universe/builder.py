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
from shared.ratelimits import Priority
from shared.redis import KeySpace

log = logging.getLogger(__name__)


class Build(BaseModel):
    """One build of the universe, as kept in Redis and served by the API."""

    generation: int = 0
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
        # Bumped by every invalidation; a build made before the latest one does not count as current.
        self.generation_key = keys.key("build", "generation")
        self.first_seen_key = keys.key("first_seen")
        self.cache = cache
        self.exchange = exchange
        self.config = settings.universe
        self.budget_s = settings.latency.stage_budgets.universe_build
        self.metrics = metrics
        self.clock = clock
        self._running: asyncio.Task[Build] | None = None
        self._running_generation = -1

    async def current(self) -> Build:
        """The latest build from Redis; built now (once in this process, however many callers ask) when there
        is none or an invalidation came after it."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.build_key)
        pipe.get(self.generation_key)
        raw, generation = await pipe.execute()
        wanted = int(generation or 0)
        if raw is not None:
            build = Build.model_validate_json(raw)
            if build.generation >= wanted:
                return build
        return await self.rebuild(wanted)

    async def rebuild(self, generation: int | None = None) -> Build:
        """Build again; concurrent callers in this process share one build, unless it began before the
        generation they need. When the build fails, the previous one is kept, marked stale with the error;
        with none, the error is raised."""
        if generation is None:
            generation = int(await self.redis.get(self.generation_key) or 0)
        if self._running is None or self._running.done() or self._running_generation < generation:
            self._running = asyncio.get_running_loop().create_task(self._build_or_keep(generation))
            self._running_generation = generation
        return await asyncio.shield(self._running)

    async def invalidate(self) -> None:
        """The next request rebuilds from a freshly fetched product list (the build stays, for stale-if-error)."""
        await self.cache.invalidate()
        await self.redis.incr(self.generation_key)

    async def _build_or_keep(self, generation: int) -> Build:
        started = time.perf_counter()
        try:
            build = await self._build(generation)
        except TraderError as exc:
            raw = await self.redis.get(self.build_key)
            if raw is None:
                if isinstance(exc, ProductsUnavailable):
                    raise
                raise ProductsUnavailable(
                    f"no universe yet: the build failed ({exc.message})", details={"error": exc.message}
                ) from exc
            update = {"stale": True, "error": exc.message, "generation": generation}
            build = Build.model_validate_json(raw).model_copy(update=update)
            log.warning("universe build failed, keeping the previous one marked stale: %s", exc.message)
        finally:
            self._timed(time.perf_counter() - started)
        stored = await self.redis.get(self.build_key)
        if stored is None or Build.model_validate_json(stored).generation <= generation:
            # a build begun before an invalidation never replaces one begun after it
            await self.redis.set(self.build_key, build.model_dump_json())
        self.metrics.stale.set(1 if build.stale else 0)
        return build

    async def _build(self, generation: int) -> Build:
        started = time.perf_counter()
        listing = await self.cache.get()
        products, unreadable = read_products(listing.products)
        now = self.clock()
        first_seen = await self._first_seen(products, now) if self.config.min_listing_age_days else {}
        candidates, excluded = screen(products, unreadable, self.config, first_seen=first_seen, now=now)
        ids = [p.product_id for p in candidates]
        books = await self.exchange.best_bid_ask(ids, at_most=Priority.NORMAL) if candidates else []
        members, unranked = rank(candidates, {book.product_id: book for book in books}, self.config)
        excluded += unranked
        self._observe(members, excluded)
        return Build(
            generation=generation,
            built_at=now,
            products_fetched_at=listing.fetched_at,
            ttl_s=listing.ttl_s,
            stale=listing.stale,
            error=listing.error,
            build_seconds=round(time.perf_counter() - started, 4),
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

    def _timed(self, seconds: float) -> None:
        """Every build attempt, failed ones too (those are the slow ones), against the stage budget."""
        self.metrics.build_seconds.observe(seconds)
        if seconds > self.budget_s:
            self.metrics.budget_exceeded.inc()
            log.warning("universe build took %.2fs, over its budget of %.2fs", seconds, self.budget_s)

    def _observe(self, members: list[Member], excluded: list[Exclusion]) -> None:
        tiers = Counter(member.tier for member in members)
        for tier in ("core", "rotational"):
            self.metrics.size.labels(tier).set(tiers[tier])
        reasons = Counter(exclusion.reason for exclusion in excluded)
        self.metrics.excluded.clear()
        for reason, count in reasons.items():
            self.metrics.excluded.labels(reason).set(count)


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
