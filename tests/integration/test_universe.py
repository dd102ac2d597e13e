"""The universe's product cache and builds against the real simulator, ratelimit service and Redis.

The simulator's own request counts (`GET /sim/stats`) are the referee of how often the exchange was called.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry

from devtools.stack import Stack
from services.universe.builder import UniverseBuilder
from services.universe.cache import ProductCache, ProductsUnavailable
from services.universe.metrics import UniverseMetrics
from services.universe.settings import UniverseSettings
from shared.exchange.client import ExchangeClient
from shared.exchange.retry import RetryPolicy
from shared.redis import KeySpace, create_redis
from shared.settings import DEV_API_TOKEN, DEV_OPERATOR_TOKEN, load_settings
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_TOKEN}"}


def list_calls(stack: Stack) -> int:
    stats = httpx.get(f"{stack.url('exchange_sim')}/sim/stats").json()
    return stats["endpoints"].get("list_products", {}).get("requests", 0)


def set_faults(stack: Stack, **faults: float) -> None:
    answer = httpx.post(f"{stack.url('exchange_sim')}/sim/faults", json=faults, headers=AUTH)
    assert answer.status_code == 200, answer.text


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def make_cache(
    redis_url: str, key_prefix: str, exchange: ExchangeClient
) -> AsyncIterator[Callable[..., ProductCache]]:
    redis = create_redis(redis_url)

    def make(clock: Clock, *, enabled: bool = True, prefix: str = key_prefix) -> ProductCache:
        return ProductCache(
            redis,
            KeySpace(prefix, "universe"),
            fetch=exchange.product_listing,
            ttl_for=lambda _: 300.0,
            enabled=enabled,
            owner="test",
            lock_timeout_s=5,
            wait_s=5,
            clock=clock,
        )

    yield make
    await redis.aclose()


async def test_the_list_is_fetched_once_per_ttl(exchange_stack: Stack, make_cache: Callable[..., ProductCache]) -> None:
    clock = Clock()
    cache = make_cache(clock)
    before = list_calls(exchange_stack)
    first = await cache.get()
    assert len(first.products) >= 250 and not first.stale
    clock.now += 299
    assert (await cache.get()).fetched_at == first.fetched_at
    assert list_calls(exchange_stack) == before + 1
    clock.now += 2  # past the 300 s TTL
    refetched = await cache.get()
    assert refetched.fetched_at == clock.now and list_calls(exchange_stack) == before + 2
    assert await cache.stats() == {"hit": 1, "miss": 1, "expired": 1, "stale": 0}


async def test_zero_minutes_calls_the_exchange_every_time(
    exchange_stack: Stack, make_cache: Callable[..., ProductCache]
) -> None:
    cache = make_cache(Clock(), enabled=False)
    before = list_calls(exchange_stack)
    for _ in range(3):
        await cache.get()
    assert list_calls(exchange_stack) == before + 3


async def test_the_last_good_list_is_served_stale_when_the_exchange_fails(
    exchange_stack: Stack, make_cache: Callable[..., ProductCache], key_prefix: str
) -> None:
    clock = Clock()
    cache = make_cache(clock)
    good = await cache.get()
    clock.now += 301
    # the public pool closed by an exchange 429 for a minute: list_products' background quota is refused
    penalty = {"pool": "public", "retry_after_ms": 60_000}
    assert httpx.post(f"{exchange_stack.url('ratelimit')}/v1/penalty", json=penalty, headers=AUTH).status_code == 200
    stale = await cache.get()
    assert stale.stale and stale.fetched_at == good.fetched_at and "quota" in (stale.error or "")
    assert (await cache.stats())["stale"] == 1
    never = make_cache(clock, prefix=f"{key_prefix}empty:")  # a stack that never had a list
    with pytest.raises(ProductsUnavailable, match="no earlier list was kept") as caught:
        await never.get()
    assert caught.value.status_code == 503 and "quota" in caught.value.details["error"]


def start_universes(
    factory: StackFactory, redis_url: str, exchange_stack: Stack, count: int, *, ready: bool = True, **env: str
) -> list[Stack]:
    """Universe processes of their own, on the exchange stack's ratelimit and simulator, sharing its key prefix;
    without `ready`, waits only until they answer (their readiness needs the exchange)."""
    shared = {
        "RATELIMIT_URL": exchange_stack.url("ratelimit"),
        "EXCHANGE_API_URL": exchange_stack.url("exchange_sim"),
        "KEY_PREFIX": exchange_stack.extra_env["KEY_PREFIX"],
        "UNIVERSE__REFRESH_INTERVAL_S": "3600",
        **env,
    }
    stacks = [factory(redis_url, names=["universe"], extra_env=shared, ready=False) for _ in range(count)]
    for stack in stacks:
        if ready:
            stack.wait_ready()
        else:
            deadline = time.monotonic() + 60
            while not alive(stack.url("universe")):
                assert time.monotonic() < deadline, "universe did not start"
                time.sleep(0.1)
    return stacks


def wait_for_first_build(url: str) -> None:
    """Until the replica's own startup build is done (a build in Redis from another replica does not count)."""
    deadline = time.monotonic() + 30
    while "trader_universe_build_seconds_count 0.0" in httpx.get(f"{url}/metrics").text:
        assert time.monotonic() < deadline, "no startup build"
        time.sleep(0.05)


def alive(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz").status_code == 200
    except httpx.HTTPError:
        return False


async def test_three_replicas_and_twenty_requests_after_an_invalidation_fetch_once(
    redis_url: str, start_stack: StackFactory, exchange_stack: Stack
) -> None:
    universes = start_universes(start_stack, redis_url, exchange_stack, 3)
    urls = [stack.url("universe") for stack in universes]
    for url in urls:
        wait_for_first_build(url)
    before = list_calls(exchange_stack)
    assert httpx.post(f"{urls[0]}/v1/cache/invalidate", headers=OPERATOR).status_code == 200
    async with httpx.AsyncClient(timeout=30) as http:
        answers = await asyncio.gather(*(http.get(f"{urls[i % 3]}/v1/universe") for i in range(20)))
    assert [a.status_code for a in answers] == [200] * 20
    assert list_calls(exchange_stack) == before + 1
    built = {a.json()["products_fetched_at"] for a in answers}
    assert len(built) == 1  # every replica built from the one list fetched
    cache = httpx.get(f"{urls[1]}/v1/cache").json()
    assert cache["fresh"] and cache["ttl_s"] == 300 and cache["misses"] >= 1


def test_a_lock_holder_killed_mid_fetch_holds_the_others_back_only_until_the_lock_times_out(
    redis_url: str, start_stack: StackFactory, exchange_stack: Stack
) -> None:
    holder, other = start_universes(
        start_stack, redis_url, exchange_stack, 2, UNIVERSE__LOCK_TIMEOUT_S="2", UNIVERSE__BUILD_WAIT_S="15"
    )
    lock_key = f"{exchange_stack.extra_env['KEY_PREFIX']}universe:products:lock"
    assert httpx.get(f"{other.url('universe')}/v1/universe", timeout=30).status_code == 200
    httpx.post(f"{holder.url('universe')}/v1/cache/invalidate", headers=OPERATOR)
    set_faults(exchange_stack, latency_ms=2500)  # every exchange call now takes 2.5 s
    try:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(httpx.get, f"{holder.url('universe')}/v1/universe", timeout=30)
            deadline = time.monotonic() + 10
            while httpx.get(f"{other.url('universe')}/v1/cache").json()["lock_holder"] is None:
                assert time.monotonic() < deadline, "no replica took the lock"
                time.sleep(0.05)
            lock_left_s = redis.Redis.from_url(redis_url).pttl(lock_key) / 1000
            holder.processes["universe"].send_signal(signal.SIGKILL)
            killed_at = time.time()
            answer = httpx.get(f"{other.url('universe')}/v1/universe", timeout=30)
    finally:
        set_faults(exchange_stack)
    body: dict[str, Any] = answer.json()
    assert answer.status_code == 200 and not body["stale"]
    # the other replica fetched the list itself once the dead holder's lock ran out, not before, and not
    # much after: the lock's time left, then one 2.5 s call (a fetch's time is taken when its answer is in)
    fetched = datetime.fromisoformat(body["products_fetched_at"].replace("Z", "+00:00")).timestamp()
    assert killed_at + lock_left_s + 2.5 - 0.3 <= fetched <= killed_at + lock_left_s + 2.5 + 3


def test_the_api_serves_stale_on_exchange_errors_and_503_with_no_list(
    redis_url: str, start_stack: StackFactory, exchange_stack: Stack
) -> None:
    set_faults(exchange_stack, error_5xx_fraction=1.0)
    try:
        (universe,) = start_universes(start_stack, redis_url, exchange_stack, 1, ready=False)
        url = universe.url("universe")
        down = httpx.get(f"{url}/v1/universe", timeout=60)
        assert down.status_code == 503
        assert down.json()["error"] == "products_unavailable" and "HTTP 503" in down.json()["message"]
        set_faults(exchange_stack)
        good = httpx.get(f"{url}/v1/universe", timeout=60).json()
        assert not good["stale"] and good["size"] > 0
        set_faults(exchange_stack, error_5xx_fraction=1.0)
        httpx.post(f"{url}/v1/cache/invalidate", headers=OPERATOR)
        stale = httpx.get(f"{url}/v1/universe", timeout=60).json()
        assert stale["stale"] and "HTTP 503" in stale["error"]
        assert stale["core"] == good["core"]
        assert httpx.get(f"{url}/v1/cache").json()["stale_serves"] >= 1
        metrics = httpx.get(f"{url}/metrics").text
        assert 'trader_universe_cache_requests_total{result="stale"}' in metrics
        assert "trader_universe_stale 1.0" in metrics
    finally:
        set_faults(exchange_stack)


async def test_when_the_fetch_fails_the_waiting_replicas_serve_the_last_good_list_without_calling_too(
    exchange_stack: Stack, make_cache: Callable[..., ProductCache]
) -> None:
    clock = Clock()
    replicas = [make_cache(clock) for _ in range(3)]
    await replicas[0].get()  # a good list to fall back on
    clock.now += 301
    set_faults(exchange_stack, error_5xx_fraction=1.0)
    try:
        before = list_calls(exchange_stack)
        served = await asyncio.gather(*(replica.get() for replica in replicas))
        calls = list_calls(exchange_stack) - before
    finally:
        set_faults(exchange_stack)
    assert all(listing.stale and "HTTP 503" in (listing.error or "") for listing in served)
    assert calls == RetryPolicy().max_attempts  # one fetch, with its retries; not one per replica


async def test_an_invalidation_during_a_build_is_not_lost(
    exchange_stack: Stack, exchange: ExchangeClient, make_cache: Callable[..., ProductCache], key_prefix: str
) -> None:
    clock = Clock()
    cache = make_cache(clock)
    builder = UniverseBuilder(
        cache.redis,
        KeySpace(key_prefix, "universe"),
        cache=cache,
        exchange=exchange,
        settings=load_settings(UniverseSettings),
        metrics=UniverseMetrics(CollectorRegistry()),
        clock=clock,
    )
    set_faults(exchange_stack, latency_ms=500)
    try:
        in_flight = asyncio.create_task(builder.rebuild())  # a background build, on the list of before
        await asyncio.sleep(0.2)
        await builder.invalidate()
        clock.now += 1
        invalidated_at = clock.now
        current = await builder.current()
        old = await in_flight
    finally:
        set_faults(exchange_stack)
    # the request after the invalidation got a build begun after it, not the one already under way
    assert old.generation == 0 and current.generation == 1 and current.built_at >= invalidated_at
    assert (await builder.current()).generation == 1  # and the earlier build did not take its place
