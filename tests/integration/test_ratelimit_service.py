"""The ratelimit service as real processes on real Redis, and the quota client the other services use."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from devtools.redis_server import RedisServer
from devtools.stack import Stack
from services.ratelimit.settings import RatelimitSettings
from shared.errors import NotFound
from shared.quota import QuotaClient, QuotaDenied
from shared.ratelimits import RateLimitConfig
from shared.settings import DEV_API_TOKEN, DEV_OPERATOR_TOKEN, load_settings
from tests.conftest import StackFactory, ratelimits_config

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_TOKEN}"}
LIMITS = {
    "ratelimit": {
        "safety_margin_pct": 10,
        "utilization_window_s": 2,
        "expected_replicas": 2,
        "pools": {
            "private": {"rate": 20, "burst": 4},
            "public": {"rate": 10, "burst": 2},
            "products": {"rate": 1, "burst": 1},
        },
        "endpoints": {
            "create_order": {"priority": "critical", "pools": {"private": 1}},
            "get_candles": {"priority": "normal", "pools": {"private": 1}},
            "accounts": {"priority": "background", "pools": {"private": 1}},
            "list_products": {"priority": "background", "pools": {"public": 1, "products": 1}},
            "server_time": {"priority": "normal", "pools": {"public": 1}},
        },
    }
}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return ratelimits_config(tmp_path, LIMITS)


@pytest.fixture
def limits(config_dir: Path) -> RateLimitConfig:
    return load_settings(RatelimitSettings, config_dir=config_dir).ratelimit


def start(factory: StackFactory, redis_url: str, config_dir: Path) -> Stack:
    return factory(redis_url, names=["ratelimit"], extra_env={"CONFIG_DIR": str(config_dir)})


def acquire(base: str, **body: object) -> httpx.Response:
    return httpx.post(f"{base}/v1/acquire", json=body, headers=AUTH)


def quota_client(base: str, limits: RateLimitConfig, **kwargs: object) -> QuotaClient:
    return QuotaClient(
        base_url=base, token=DEV_API_TOKEN, config=limits, client_id="test", registry=CollectorRegistry(), **kwargs
    )


async def until_back(client: QuotaClient, timeout_s: float = 10) -> None:
    """Let the client's background probe find the service again."""
    deadline = time.monotonic() + timeout_s
    while client.in_fallback:
        assert time.monotonic() < deadline, "the client's probe did not find the service again"
        await asyncio.sleep(0.05)


def test_acquire_contract(redis_url: str, start_stack: StackFactory, config_dir: Path) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    granted = acquire(base, endpoint="create_order")
    assert granted.status_code == 200
    assert granted.json() == {
        "granted": True,
        "waited_ms": granted.json()["waited_ms"],
        "remaining": 3,
        "utilization_pct": granted.json()["utilization_pct"],
        "clients": {"private": 0},
    }
    counted = acquire(base, endpoint="create_order", client_id="executor-1")
    assert counted.json()["clients"] == {"private": 1}
    drained = acquire(base, endpoint="create_order", cost=4, max_wait_ms=1000)
    assert drained.status_code == 200 and drained.json()["remaining"] == 0
    drained = acquire(base, endpoint="create_order", cost=4, max_wait_ms=1000)
    assert drained.status_code == 200 and drained.json()["remaining"] == 0
    denied = acquire(base, endpoint="create_order", cost=4)
    assert denied.status_code == 429
    body = denied.json()
    assert body["granted"] is False and body["reason"] == "limit" and body["pool"] == "private"
    assert 0 < body["retry_after_ms"] <= 4 * 1000 / 18 + 1
    assert denied.headers["retry-after"] == "1"

    unknown = acquire(base, endpoint="get_candle")
    assert unknown.status_code == 404
    assert "get_candle" in unknown.json()["message"] and "get_candles" in unknown.json()["details"]["known"]
    for cost in (0, -1, 5):
        bad = acquire(base, endpoint="get_candles", cost=cost)
        assert bad.status_code == 422, cost
        assert bad.json()["details"]["field"] == "cost"
    missing = httpx.post(f"{base}/v1/acquire", json={"cost": 1}, headers=AUTH)
    assert missing.status_code == 422 and missing.json()["details"]["fields"][0]["field"] == "endpoint"
    assert httpx.post(f"{base}/v1/acquire", json={"endpoint": "create_order"}).status_code == 401


def test_max_wait_is_served_by_waiting_not_polling(redis_url: str, start_stack: StackFactory, config_dir: Path) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    assert acquire(base, endpoint="create_order", cost=4).status_code == 200
    waited = acquire(base, endpoint="create_order", cost=4, max_wait_ms=500)
    assert waited.status_code == 200
    assert 100 < waited.json()["waited_ms"] < 500  # the four units take 222 ms to come back
    assert acquire(base, endpoint="create_order", cost=4, max_wait_ms=10).status_code == 429


def test_priorities_shed_background_first(redis_url: str, start_stack: StackFactory, config_dir: Path) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    # fill the private pool past 80 % of its 2 s window (36 units) with waiting critical requests
    for _ in range(31):
        assert acquire(base, endpoint="create_order", max_wait_ms=2000).status_code == 200
    shed = acquire(base, endpoint="accounts")
    assert shed.status_code == 429 and shed.json()["reason"] == "shed"
    assert acquire(base, endpoint="get_candles", max_wait_ms=1000).status_code == 200
    assert acquire(base, endpoint="create_order", max_wait_ms=1000).status_code == 200


def test_penalty_and_limits_are_shared_by_replicas(redis_url: str, start_stack: StackFactory, config_dir: Path) -> None:
    a = start(start_stack, redis_url, config_dir).url("ratelimit")
    b = start(start_stack, redis_url, config_dir).url("ratelimit")

    penalty = httpx.post(f"{a}/v1/penalty", json={"pool": "private", "retry_after_ms": 800}, headers=AUTH)
    assert penalty.status_code == 200
    closed = acquire(b, endpoint="get_candles")
    assert closed.status_code == 429 and closed.json()["reason"] == "penalty"
    assert 0 < closed.json()["retry_after_ms"] <= 800
    assert httpx.get(f"{b}/v1/quota/private").json()["blocked_until_ms"] is not None
    assert acquire(b, endpoint="list_products").status_code == 200  # other pools stay open
    time.sleep(0.85)
    assert acquire(b, endpoint="get_candles").status_code == 200

    changed = httpx.put(f"{a}/v1/limits/private", json={"rate": 40, "burst": 8}, headers=OPERATOR)
    assert changed.status_code == 200 and changed.json()["source"] == "override"
    seen = httpx.get(f"{b}/v1/quota/private").json()
    assert (seen["rate"], seen["burst"], seen["effective_rate"]) == (40, 8, 36)
    assert httpx.get(f"{b}/v1/limits").json()["pools"]["private"]["source"] == "override"
    assert acquire(b, endpoint="get_candles", cost=8, max_wait_ms=1000).status_code == 200  # within the new burst
    reverted = httpx.delete(f"{b}/v1/limits/private", headers=OPERATOR).json()
    assert (reverted["rate"], reverted["burst"], reverted["source"]) == (20, 4, "config")

    assert httpx.put(f"{a}/v1/limits/nope", json={"rate": 1, "burst": 1}, headers=OPERATOR).status_code == 404
    assert httpx.put(f"{a}/v1/limits/private", json={"rate": 0, "burst": 1}, headers=OPERATOR).status_code == 422
    assert httpx.put(f"{a}/v1/limits/private", json={"rate": 1, "burst": 1}).status_code == 401


def test_utilization_metric_is_the_same_on_every_replica(
    redis_url: str, start_stack: StackFactory, config_dir: Path
) -> None:
    a = start(start_stack, redis_url, config_dir).url("ratelimit")
    b = start(start_stack, redis_url, config_dir).url("ratelimit")
    for _ in range(9):
        assert acquire(a, endpoint="create_order", max_wait_ms=1000).status_code == 200

    def gauge(base: str, endpoint: str) -> float:
        for line in httpx.get(f"{base}/metrics").text.splitlines():
            if line.startswith(f'trader_rate_limiter_utilization_pct{{endpoint="{endpoint}"}}'):
                return float(line.split()[-1])
        raise AssertionError(f"no utilization series for {endpoint}")

    # 9 granted over 18/s * 2 s = 25 %, read back through the replica that granted none of them
    assert gauge(b, "create_order") == pytest.approx(25, abs=1.0)
    assert gauge(b, "get_candles") == gauge(b, "create_order")  # same pool
    assert gauge(b, "list_products") == 0
    metrics_a = httpx.get(f"{a}/metrics").text
    assert (
        'trader_rate_limiter_requests_total{decision="granted",endpoint="create_order",priority="critical"} 9.0'
        in metrics_a
    )
    assert "trader_rate_limiter_wait_seconds_bucket" in metrics_a


async def test_two_replicas_eight_clients_at_three_times_the_limit(
    redis_url: str, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    a = start(start_stack, redis_url, config_dir).url("ratelimit")
    b = start(start_stack, redis_url, config_dir).url("ratelimit")
    pool = limits.pools["private"]
    rate = limits.effective_rate(pool)
    clients = [quota_client(a if i % 2 else b, limits, max_retries=0) for i in range(8)]
    duration = 4.0
    interval = 8 / (3 * rate)  # each client asks at 3x its share of the limit
    granted = 0
    denied = 0
    attempts: list[float] = []

    async def run(client: QuotaClient) -> None:
        nonlocal granted, denied
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline:
            attempts.append(time.monotonic())
            try:
                # critical: only the hard limit applies (normal traffic keeps 5 % headroom by design)
                await client.take("create_order", max_wait_ms=0)
                granted += 1
            except QuotaDenied:
                denied += 1
            await asyncio.sleep(interval)

    await asyncio.gather(*(run(c) for c in clients))
    elapsed = max(attempts) - min(attempts)
    for client in clients:
        assert not client.in_fallback
        await client.aclose()
    bound = rate * elapsed + pool.burst
    print(
        f"\ntwo replicas, 8 clients, 3x demand for {elapsed:.2f}s: granted {granted} of limit {bound:.1f} "
        f"({granted / bound:.1%}), denied {denied}"
    )
    assert granted <= bound
    assert granted >= 0.95 * bound
    assert denied > granted  # demand really was above the limit


async def test_client_waits_retries_and_reports_penalties(
    redis_url: str, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    client = quota_client(base, limits, max_wait_ms=0, max_retries=5, max_retry_delay_ms=1000)
    try:
        async with client.acquire("create_order") as grant:
            assert grant.remaining == 3 and not grant.fallback
        for _ in range(3):
            await client.take("create_order")
        retried = await client.take("create_order")  # 429 from the service, retried after its advice
        assert retried.remaining == 0
        with pytest.raises(NotFound, match="unknown quota endpoint"):
            await client.take("nope")
        await client.report_penalty(endpoint="get_candles", retry_after_ms=5000)
        quota = httpx.get(f"{base}/v1/quota/private").json()
        assert quota["blocked_until_ms"] is not None
        with pytest.raises(QuotaDenied) as caught:
            await client.take("get_candles")
        assert caught.value.reason == "penalty" and caught.value.retry_after_ms > 4000
    finally:
        await client.aclose()


async def test_client_falls_back_locally_and_recovers(
    redis_url: str, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    stack = start(start_stack, redis_url, config_dir)
    base = stack.url("ratelimit")
    client = quota_client(base, limits, max_wait_ms=0, probe_s=0.2)
    try:
        assert not (await client.take("create_order")).fallback
        stack.stop()
        first = await client.take("create_order")
        assert first.fallback and client.in_fallback
        assert client.metrics.fallback._value.get() == 1
        # never unlimited: the local share is rate / expected_replicas = 9/s with the pool's burst of 4
        granted = 1
        for _ in range(20):
            try:
                await client.take("create_order")
                granted += 1
            except QuotaDenied:
                break
        assert granted <= 4
        stack.start(["ratelimit"])
        stack.wait_ready()
        await until_back(client)
        recovered = await client.take("get_candles", max_wait_ms=1000)
        assert not recovered.fallback and not client.in_fallback
        assert client.metrics.fallback._value.get() == 0
    finally:
        await client.aclose()


async def test_redis_outage_is_503_then_recovers_without_restart(
    private_redis: RedisServer, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    stack = start(start_stack, private_redis.url, config_dir)
    base = stack.url("ratelimit")
    client = quota_client(base, limits, max_wait_ms=0, probe_s=0.2)
    try:
        assert acquire(base, endpoint="create_order").status_code == 200
        private_redis.stop()
        down = acquire(base, endpoint="create_order")
        assert down.status_code == 503
        assert down.json()["details"]["component"] == "redis"
        assert (await client.take("create_order")).fallback
        private_redis.start()
        deadline = time.monotonic() + 15
        while acquire(base, endpoint="get_candles").status_code != 200:
            assert time.monotonic() < deadline, "service did not recover after Redis came back"
            time.sleep(0.1)
        await until_back(client)
        assert not (await client.take("get_candles", max_wait_ms=1000)).fallback
        assert stack.processes["ratelimit"].poll() is None
    finally:
        await client.aclose()


async def test_orders_are_not_queued_behind_waiting_market_data(
    redis_url: str, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    pool = limits.pools["private"]
    async with httpx.AsyncClient(
        base_url=base, headers=AUTH, timeout=30, limits=httpx.Limits(max_connections=200)
    ) as http:

        async def ask(endpoint: str) -> tuple[int, float, float]:
            answer = await http.post("/v1/acquire", json={"endpoint": endpoint, "max_wait_ms": 5000})
            return answer.status_code, answer.json().get("waited_ms", 0.0), time.monotonic()

        started = time.monotonic()
        candles = [asyncio.create_task(ask("get_candles")) for _ in range(128)]
        await asyncio.sleep(0.5)  # the candle requests now wait for quota in the service
        orders = []
        for _ in range(5):
            orders.append(await ask("create_order"))
            await asyncio.sleep(0.2)
        answers = await asyncio.gather(*candles)
    granted = [done for status, _, done in [*answers, *orders] if status == 200]
    elapsed = max(granted) - started
    assert all(status == 200 for status, _, _ in orders)
    # an order waits at most for the slot being used now, never for the candles queued ahead of it
    assert max(waited for _, waited, _ in orders) < 250, orders
    assert len(granted) <= limits.effective_rate(pool) * elapsed + pool.burst
    utilization = httpx.get(f"{base}/v1/quota/private").json()["utilization_pct"]
    assert 0 < utilization <= 100


def test_a_penalty_reported_during_a_wait_refuses_the_waiting_grant(
    redis_url: str, start_stack: StackFactory, config_dir: Path
) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    assert acquire(base, endpoint="create_order", cost=4).status_code == 200
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(acquire, base, endpoint="create_order", cost=4, max_wait_ms=1000)  # ~222 ms ahead
        time.sleep(0.05)
        httpx.post(f"{base}/v1/penalty", json={"pool": "private", "retry_after_ms": 2000}, headers=AUTH)
        answer = waiting.result()
    assert answer.status_code == 429, answer.text
    assert answer.json()["reason"] == "penalty" and answer.json()["retry_after_ms"] > 1000


def test_waiting_on_the_product_budget_leaves_the_public_pool_free(
    redis_url: str, start_stack: StackFactory, config_dir: Path
) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    assert acquire(base, endpoint="list_products").status_code == 200
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(acquire, base, endpoint="list_products", max_wait_ms=2000)  # ~1.1 s on products
        time.sleep(0.15)
        others = []
        for _ in range(4):
            others.append(acquire(base, endpoint="server_time").status_code)
            time.sleep(0.15)
        assert waiting.result().status_code == 200
    assert others == [200] * 4


def test_a_caller_may_lower_its_priority_never_raise_it(
    redis_url: str, start_stack: StackFactory, config_dir: Path
) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    assert acquire(base, endpoint="get_candles", priority="background").status_code == 200
    raised = acquire(base, endpoint="get_candles", priority="critical")
    assert raised.status_code == 422
    assert raised.json()["details"]["field"] == "priority" and "normal" in raised.json()["message"]


def test_out_of_range_numbers_and_huge_strings_are_422_naming_the_field(
    redis_url: str, start_stack: StackFactory, config_dir: Path
) -> None:
    base = start(start_stack, redis_url, config_dir).url("ratelimit")
    huge = 2**70
    for path, method, body, field in (
        ("/v1/acquire", "POST", {"endpoint": "get_candles", "cost": huge}, "cost"),
        ("/v1/acquire", "POST", {"endpoint": "get_candles", "max_wait_ms": huge}, "max_wait_ms"),
        ("/v1/limits/private", "PUT", {"rate": 1, "burst": huge}, "burst"),
        ("/v1/penalty", "POST", {"pool": "private", "retry_after_ms": huge}, "retry_after_ms"),
    ):
        answer = httpx.request(method, f"{base}{path}", json=body, headers=OPERATOR if method == "PUT" else AUTH)
        assert answer.status_code == 422, (field, answer.text)
        fields = answer.json()["details"]["fields"]
        assert fields[0]["field"] == field and fields[0]["value"] == str(huge)
    long_id = acquire(base, endpoint="get_candles", client_id="x" * 3_000)
    assert long_id.status_code == 422 and long_id.json()["details"]["fields"][0]["field"] == "client_id"
    assert len(long_id.content) < 2_000
    too_big = httpx.post(f"{base}/v1/acquire", content=b" " * 100_000, headers=AUTH)
    assert too_big.status_code == 413 and too_big.json()["error"] == "body_too_large"
    assert too_big.headers["x-request-id"]
    no_token = httpx.post(f"{base}/v1/acquire", content=b" " * 100_000)
    assert no_token.status_code == 401
    granted = acquire(base, endpoint="get_candles")
    assert granted.status_code == 200 and len(granted.headers["x-request-id"]) == 16
