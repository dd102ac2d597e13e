"""The exchange's product list cached in Redis for every universe replica: TTL, single flight, stale-if-error.

Keys (under `<prefix>universe:`): `products` (a hash: the list as the exchange gave it, when it was fetched
and how long it stays fresh; Redis drops it at twice that), `products:last_good` (the same, without TTL:
what is served, marked stale, when the exchange cannot be reached), `products:lock` (the replica fetching
the list, renewed while it works) and `cache:stats` (hits, misses, expiries and stale serves of every replica).
Freshness is judged on the injected clock against the stored fetch time, so tests move time without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from shared.errors import ServiceUnavailable, TraderError
from shared.lock import RedisLock
from shared.redis import KeySpace

log = logging.getLogger(__name__)

Result = Literal["hit", "miss", "expired", "stale"]
RESULTS: tuple[Result, ...] = ("hit", "miss", "expired", "stale")
POLL_S = 0.05
# After a failed fetch, every replica serves the last good list for this long before one of them tries again.
ERROR_HOLD_S = 10.0


@dataclass(frozen=True, slots=True)
class ProductList:
    products: list[dict[str, Any]]
    fetched_at: float
    ttl_s: float
    stale: bool = False
    error: str | None = None


class ProductsUnavailable(ServiceUnavailable):
    """No product list could be fetched and none was ever kept."""

    code = "products_unavailable"


class ProductCache:
    """The product list for every replica: one fetch per TTL across all of them, the last good list when the
    exchange fails."""

    def __init__(
        self,
        redis: Redis,
        keys: KeySpace,
        *,
        fetch: Callable[[], Awaitable[list[dict[str, Any]]]],
        ttl_for: Callable[[list[dict[str, Any]]], float],
        enabled: bool,
        owner: str,
        lock_timeout_s: float,
        wait_s: float,
        on_result: Callable[[Result], None] = lambda _: None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.redis = redis
        self.key = keys.key("products")
        self.last_good_key = keys.key("products", "last_good")
        self.stats_key = keys.key("cache", "stats")
        self.error_key = keys.key("products", "error")
        self.lock = RedisLock(redis, keys.key("products", "lock"), owner=owner, timeout_s=lock_timeout_s)
        self.fetch = fetch
        self.ttl_for = ttl_for
        self.enabled = enabled
        self.wait_s = wait_s
        self.on_result = on_result
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep

    async def get(self) -> ProductList:
        """The product list: from Redis while fresh; else fetched by exactly one replica while the others wait
        for its result; the last good list, marked stale, when the exchange fails."""
        if not self.enabled:
            await self._count("miss")
            return await self._fetch_or_stale()
        cached = await self._load(self.key)
        if cached is not None and self._fresh(cached):
            await self._count("hit")
            return cached
        await self._count("expired" if cached is not None else "miss")
        deadline = self.monotonic() + self.wait_s
        while True:
            failed = await self._recent_failure()
            if failed and await self.redis.exists(self.last_good_key):
                return await self._stale(failed)
            async with self.lock.held() as leading:
                if leading:
                    fresh = await self._fresh_list()
                    return fresh if fresh is not None else await self._fetch_or_stale()
            await self.sleep(POLL_S)
            fresh = await self._fresh_list()
            if fresh is not None:
                return fresh
            if self.monotonic() >= deadline:
                holder = await self.lock.holder()
                return await self._stale(f"the replica fetching the product list ({holder}) took over {self.wait_s:g}s")

    async def last_good(self) -> ProductList | None:
        return await self._load(self.last_good_key)

    async def entry(self) -> ProductList | None:
        """The cached list, fresh or not (None once Redis dropped it or after an invalidation)."""
        return await self._load(self.key)

    async def invalidate(self) -> None:
        """The next request fetches the list again (the last good list stays, for stale-if-error)."""
        await self.redis.delete(self.key, self.error_key)

    async def _recent_failure(self) -> str | None:
        raw = await self.redis.get(self.error_key)
        return raw.decode() if raw else None

    async def stats(self) -> dict[str, int]:
        raw = await self.redis.hgetall(self.stats_key)
        return {result: int(raw.get(result.encode(), 0)) for result in RESULTS}

    async def _fetch_or_stale(self) -> ProductList:
        try:
            products = await self.fetch()
        except TraderError as exc:
            log.warning("fetching the product list failed: %s", exc.message)
            # the replicas waiting for this fetch, and those asking soon after, serve the last good list
            # rather than each calling the failing exchange in turn
            await self.redis.set(self.error_key, exc.message, px=int(ERROR_HOLD_S * 1000))
            return await self._stale(exc.message)
        listing = ProductList(products, self.clock(), self.ttl_for(products))
        body = orjson.dumps(products)
        mapping = {"fetched_at": repr(listing.fetched_at), "ttl_s": repr(listing.ttl_s), "body": body}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.last_good_key, mapping=mapping)
        if self.enabled and listing.ttl_s > 0:
            pipe.delete(self.key)
            pipe.hset(self.key, mapping=mapping)
            # Redis drops it well after it stops being fresh, so an expiry is seen (and counted) as one.
            pipe.pexpire(self.key, int(listing.ttl_s * 2000))
        await pipe.execute()
        return listing

    async def _stale(self, error: str) -> ProductList:
        last = await self.last_good()
        if last is None:
            raise ProductsUnavailable(
                f"no product list: the exchange failed ({error}) and no earlier list was kept",
                details={"component": "exchange", "error": error},
            )
        await self._count("stale")
        return ProductList(last.products, last.fetched_at, last.ttl_s, stale=True, error=error)

    def _fresh(self, listing: ProductList) -> bool:
        return self.clock() - listing.fetched_at < listing.ttl_s

    async def _fresh_list(self) -> ProductList | None:
        """The cached list if fresh; a cheap look at its fetch time first, the body only when it is fresh."""
        fetched_at, ttl_s = await self.redis.hmget(self.key, ["fetched_at", "ttl_s"])
        if fetched_at is None or ttl_s is None or self.clock() - float(fetched_at) >= float(ttl_s):
            return None
        cached = await self._load(self.key)
        return cached if cached is not None and self._fresh(cached) else None

    async def _load(self, key: str) -> ProductList | None:
        fetched_at, ttl_s, body = await self.redis.hmget(key, ["fetched_at", "ttl_s", "body"])
        if fetched_at is None or ttl_s is None or body is None:
            return None
        return ProductList(orjson.loads(body), float(fetched_at), float(ttl_s))

    async def _count(self, result: Result) -> None:
        self.on_result(result)
        await self.redis.hincrby(self.stats_key, result, 1)
