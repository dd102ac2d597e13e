"""The product-list cache, measured against the simulator with Coinbase-like latency (150 ms a call).

1. Latency: the product list on a cache hit and on a miss; a whole build (list, filters, one best_bid_ask
   call) on a hit and on a miss; GET /v1/universe as a running universe service answers it from Redis.
2. list_products calls per simulated hour, and their share of the `products` and `public` pools: the shared
   Redis cache at 5 minutes and at 0 (disabled), with 1 and 3 replicas, beside a per-process cache (what the
   design note describes: each replica caching for itself), in the same run. An hour is simulated by moving
   the caches' clock one build interval (60 s) at a time; every call is a real call to the simulator, whose
   own count is the figure. The hour runs in about 20 real seconds, so for this part the ratelimit service
   gets a `products` budget that does not hold the compressed calls back (ticks are paced to stay under the
   simulator's 10 requests/s); the shares are of the committed config's pools over a real hour.

Run with `python -m bench.universe` (part of `make bench`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client import CollectorRegistry

from bench.measure import percentile
from bench.service import ServiceProcess, wait_all_ready
from devtools.redis_server import delete_prefix, redis_answers
from devtools.stack import ROOT
from services.universe.builder import UniverseBuilder
from services.universe.cache import ProductCache, ProductList
from services.universe.metrics import UniverseMetrics
from services.universe.settings import UniverseSettings
from shared.exchange.client import ExchangeClient
from shared.exchange.factory import api_key, create_exchange_client
from shared.redis import KeySpace, create_redis
from shared.settings import DEV_API_TOKEN, load_settings

REDIS_URL = "redis://127.0.0.1:6379/0"
LATENCY_MS = 150
BUILD_EVERY_S = 60
HOUR_S = 3600
SAMPLES = 40
HTTP_SAMPLES = 500
# Real seconds per simulated build interval: three replicas' calls stay under the simulator's 10 public calls/s.
TICK_S = 0.35


def roomy_config(directory: Path) -> Path:
    """The committed ratelimits.yaml with a products budget that never holds a compressed hour back."""
    limits = yaml.safe_load((ROOT / "config" / "ratelimits.yaml").read_text())
    limits["ratelimit"]["pools"]["products"] = {"rate": 100, "burst": 10}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratelimits.yaml").write_text(yaml.safe_dump(limits))
    return directory


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class PerProcessCache:
    """The design note's cache: a list and its fetch time in the process, one per replica."""

    def __init__(self, fetch: Callable[[], Awaitable[list[dict[str, Any]]]], ttl_s: float, clock: Clock):
        self.fetch = fetch
        self.ttl_s = ttl_s
        self.clock = clock
        self.cached: ProductList | None = None

    async def get(self) -> ProductList:
        if self.cached is None or self.clock() - self.cached.fetched_at >= self.ttl_s:
            self.cached = ProductList(await self.fetch(), self.clock(), self.ttl_s)
        return self.cached


def list_calls(sim: str) -> int:
    stats = httpx.get(f"{sim}/sim/stats").json()
    return stats["endpoints"].get("list_products", {}).get("requests", 0)


def shared_cache(exchange: ExchangeClient, prefix: str, ttl_s: float, clock: Clock, owner: str) -> ProductCache:
    return ProductCache(
        create_redis(REDIS_URL),
        KeySpace(prefix, "universe"),
        fetch=exchange.product_listing,
        ttl_for=lambda _: ttl_s,
        enabled=ttl_s > 0,
        owner=owner,
        lock_timeout_s=15,
        wait_s=20,
        clock=clock,
    )


async def simulated_hour(
    sim: str, exchange: ExchangeClient, *, variant: str, ttl_minutes: int, replicas: int
) -> tuple[int, float]:
    """list_products calls in one simulated hour of builds every 60 s by `replicas` replicas; and the time taken."""
    clock = Clock()
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    ttl_s = ttl_minutes * 60.0
    caches: list[Any] = [
        PerProcessCache(exchange.product_listing, ttl_s, clock)
        if variant == "per-process"
        else shared_cache(exchange, prefix, ttl_s, clock, owner=f"replica-{i}")
        for i in range(replicas)
    ]
    before = list_calls(sim)
    started = time.perf_counter()
    for _ in range(HOUR_S // BUILD_EVERY_S):
        await asyncio.gather(*(cache.get() for cache in caches), asyncio.sleep(TICK_S))
        clock.now += BUILD_EVERY_S
    elapsed = time.perf_counter() - started
    for cache in caches:
        if isinstance(cache, ProductCache):
            await cache.redis.aclose()
    delete_prefix(REDIS_URL, prefix)
    return list_calls(sim) - before, elapsed


async def timed(op: Callable[[], Awaitable[object]], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        start = time.perf_counter()
        await op()
        out.append((time.perf_counter() - start) * 1000)
    return sorted(out)


async def latency_rows(exchange: ExchangeClient, settings: UniverseSettings) -> list[str]:
    clock = Clock()
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    cache = shared_cache(exchange, prefix, 300, clock, owner="bench")
    builder = UniverseBuilder(
        cache.redis,
        KeySpace(prefix, "universe"),
        cache=cache,
        exchange=exchange,
        settings=settings,
        metrics=UniverseMetrics(CollectorRegistry()),
        clock=clock,
    )

    async def expire_then(op: Callable[[], Awaitable[object]]) -> object:
        clock.now += 301
        return await op()

    rows = []
    await cache.get()
    for name, op in (
        ("product list, cache hit", cache.get),
        ("product list, cache miss (fetched)", lambda: expire_then(cache.get)),
        ("whole build, list from cache", builder.rebuild),
        ("whole build, list fetched", lambda: expire_then(builder.rebuild)),
    ):
        ms = await timed(op, SAMPLES if "fetched" not in name else SAMPLES // 4)
        rows.append(f"| {name} | {percentile(ms, 50):.2f} | {percentile(ms, 99):.2f} |")
    await cache.redis.aclose()
    delete_prefix(REDIS_URL, prefix)
    return rows


def http_rows(universe_url: str) -> list[str]:
    with httpx.Client(base_url=universe_url, timeout=30) as http:
        assert http.get("/v1/universe").status_code == 200
        ms = []
        for _ in range(HTTP_SAMPLES):
            start = time.perf_counter()
            http.get("/v1/universe").raise_for_status()
            ms.append((time.perf_counter() - start) * 1000)
    ms.sort()
    return [
        f"| GET /v1/universe (a running service, from Redis) | {percentile(ms, 50):.2f} | {percentile(ms, 99):.2f} |"
    ]


async def main() -> None:
    if not redis_answers(REDIS_URL):
        raise SystemExit(f"bench: no Redis at {REDIS_URL}; start one (make run starts one) and run again")
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory() as tmp:
        roomy = roomy_config(Path(tmp) / "config")
        started = [
            ServiceProcess.start(
                name,
                config_dir=roomy if name == "ratelimit" else ROOT / "config",
                redis_url=REDIS_URL,
                key_prefix=prefix,
                token=DEV_API_TOKEN,
                log_dir=Path(tmp),
                service=name,
            )
            for name in ("ratelimit", "exchange_sim")
        ]
        ratelimit, sim = started
        try:
            await wait_all_ready(started)
            faults = {"latency_ms": LATENCY_MS}
            auth = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
            answer = await asyncio.to_thread(httpx.post, f"{sim.url}/sim/faults", json=faults, headers=auth)
            answer.raise_for_status()
            settings = load_settings(
                UniverseSettings, ratelimit_url=ratelimit.url, exchange_api_url=sim.url, key_prefix=prefix
            )
            exchange = create_exchange_client(settings, settings.ratelimit, CollectorRegistry(), api_key(settings))
            latency = await latency_rows(exchange, settings)
            universe = ServiceProcess.start(
                "universe",
                config_dir=ROOT / "config",
                redis_url=REDIS_URL,
                key_prefix=prefix,
                token=DEV_API_TOKEN,
                log_dir=Path(tmp),
                service="universe",
                extra_env={"RATELIMIT_URL": ratelimit.url, "EXCHANGE_API_URL": sim.url},
            )
            started.append(universe)
            await wait_all_ready([universe])
            latency += await asyncio.to_thread(http_rows, universe.url)
            calls = []
            for variant, ttl_minutes, replicas in (
                ("shared Redis cache", 5, 1),
                ("shared Redis cache", 5, 3),
                ("per-process cache", 5, 1),
                ("per-process cache", 5, 3),
                ("no cache (0)", 0, 1),
                ("no cache (0)", 0, 3),
            ):
                count, seconds = await simulated_hour(
                    sim.url,
                    exchange,
                    variant="per-process" if variant.startswith("per") else "shared",
                    ttl_minutes=ttl_minutes,
                    replicas=replicas,
                )
                calls.append((variant, ttl_minutes, replicas, count, seconds))
            await exchange.aclose()
            await exchange.quota.aclose()
        finally:
            for service in started:
                service.stop()
            delete_prefix(REDIS_URL, prefix)
    limits = load_settings(UniverseSettings).ratelimit  # the committed pools
    products = limits.effective_rate(limits.pools["products"]) * HOUR_S
    public = limits.effective_rate(limits.pools["public"]) * HOUR_S
    print(f"\nuniverse, simulator latency {LATENCY_MS} ms a call:\n")
    print("| what | p50 ms | p99 ms |\n|---|---:|---:|")
    print("\n".join(latency))
    print("\n| cache | TTL min | replicas | list_products calls / simulated hour | of `products` | of `public` |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant, ttl_minutes, replicas, count, _ in calls:
        print(f"| {variant} | {ttl_minutes} | {replicas} | {count} | {count / products:.2%} | {count / public:.3%} |")
    print(f"\n(an hour = {HOUR_S // BUILD_EVERY_S} builds per replica, one every {BUILD_EVERY_S} s)")


if __name__ == "__main__":
    asyncio.run(main())
