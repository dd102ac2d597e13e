"""The quota script against real Redis, with time driven by the test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.ratelimit.gcra import ACQUIRE_LUA, PENALTY_LUA, Code, Decision, build_plans, parse_decision, script_args
from shared.ratelimits import Priority, RateLimitConfig
from shared.redis import KeySpace

pytestmark = pytest.mark.integration

CONFIG = RateLimitConfig.model_validate(
    {
        "safety_margin_pct": 10,
        "utilization_window_s": 10,
        "pools": {
            "private": {"rate": 30, "burst": 5},
            "public": {"rate": 10, "burst": 3},
            "own": {"rate": 2, "burst": 2},
        },
        "endpoints": {
            "server_time": {"priority": "normal", "pools": {"public": 1}},
            "create_order": {"priority": "critical", "pools": {"private": 1}},
            "get_candles": {"priority": "normal", "pools": {"private": 1}},
            "list_products": {"priority": "background", "pools": {"public": 1, "own": 1}},
            "heavy": {"priority": "normal", "pools": {"private": 2}},
        },
    }
)
SECOND = 1_000_000
T0 = 1_800_000_000 * SECOND


class Script:
    """Calls the script with an explicit clock, as the service does with Redis time."""

    def __init__(self, client: redis.Redis, prefix: str, config: RateLimitConfig = CONFIG):
        self.client = client
        self.config = config
        self.keys = KeySpace(prefix, "ratelimit")
        self.plans = build_plans(config, self.keys)
        self.acquire = client.register_script(ACQUIRE_LUA)
        self.penalty = client.register_script(PENALTY_LUA)

    def decide(
        self,
        endpoint: str,
        now_us: int,
        *,
        cost: int = 1,
        priority: Priority | None = None,
        max_wait_us: int = 0,
        client_id: str = "",
    ) -> Decision:
        plan = self.plans[endpoint]
        prio = priority or self.config.endpoints[endpoint].priority
        args = script_args(
            self.config, plan, cost=cost, priority=prio, max_wait_us=max_wait_us, now_us=now_us, client_id=client_id
        )
        return parse_decision(plan, self.acquire(keys=list(plan.keys), args=args))

    def state(self) -> dict[bytes, object]:
        """Every key of the script: pool hashes and client sets."""
        found: dict[bytes, object] = {}
        for key in self.client.scan_iter(match=f"{self.keys.base}*"):
            kind = self.client.type(key)
            found[key] = (
                self.client.hgetall(key) if kind == b"hash" else self.client.zrange(key, 0, -1, withscores=True)
            )
        return found


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def script(client: redis.Redis, key_prefix: str) -> Script:
    return Script(client, key_prefix)


def clear(client: redis.Redis, script: Script) -> None:
    keys = list(client.scan_iter(match=f"{script.keys.base}*"))
    if keys:
        client.delete(*keys)


arrivals = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=400_000),  # gap to the previous arrival, us
        st.sampled_from(["create_order", "get_candles", "heavy"]),
        st.integers(min_value=1, max_value=2),
        st.sampled_from(list(Priority)),
        st.sampled_from([0, 0, 50_000, 300_000]),  # max wait, us
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals)
def test_granted_cost_never_exceeds_rate_times_window_plus_burst(
    client: redis.Redis, script: Script, requests: list[tuple[int, str, int, Priority, int]]
) -> None:
    clear(client, script)
    pool = CONFIG.pools["private"]
    rate = CONFIG.effective_rate(pool)
    now = T0
    grants: list[tuple[int, int]] = []  # (time the request may proceed, units taken from the pool)
    for gap, endpoint, cost, priority, max_wait in requests:
        now += gap
        weight = CONFIG.endpoints[endpoint].pools["private"]
        if cost * weight > pool.burst:
            continue
        decision = script.decide(endpoint, now, cost=cost, priority=priority, max_wait_us=max_wait)
        if decision.granted:
            assert decision.wait_us <= max_wait
            grants.append((now + decision.wait_us, cost * weight))
    grants.sort()
    for i, (start, _) in enumerate(grants):
        for window_us in (100_000, SECOND, 3 * SECOND):
            taken = sum(units for at, units in grants[i:] if at < start + window_us)
            assert taken <= rate * window_us / SECOND + pool.burst + 1e-6, (start, window_us, taken)
    clear(client, script)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(arrivals)
def test_a_denied_request_changes_no_key(
    client: redis.Redis, script: Script, requests: list[tuple[int, str, int, Priority, int]]
) -> None:
    clear(client, script)
    now = T0
    for gap, endpoint, cost, priority, max_wait in requests:
        now += gap
        before = script.state()
        decision = script.decide(endpoint, now, cost=cost, priority=priority, max_wait_us=max_wait)
        if not decision.granted:
            assert script.state() == before
    clear(client, script)


def test_burst_then_steady_rate(script: Script) -> None:
    results = [script.decide("create_order", T0).granted for _ in range(6)]
    assert results == [True] * 5 + [False]
    denied = script.decide("create_order", T0)
    assert denied.code is Code.DENIED and denied.pool == "private"
    interval = SECOND / 27
    assert denied.retry_after_us == pytest.approx(interval, abs=2)
    assert script.decide("create_order", T0 + int(interval) + 1).granted


def test_linked_pools_are_all_or_nothing(script: Script) -> None:
    # list_products draws from public (burst 3) and its own budget (burst 2): the own pool runs out first.
    assert script.decide("list_products", T0, priority=Priority.CRITICAL).granted
    assert script.decide("list_products", T0, priority=Priority.CRITICAL).granted
    before = script.state()
    third = script.decide("list_products", T0, priority=Priority.CRITICAL)
    assert not third.granted and third.pool == "own"
    assert script.state() == before
    public = next(p for p in third.pools if p.pool == "public")
    assert public.remaining == 1


def test_wait_turns_into_a_reservation_in_order(script: Script) -> None:
    for _ in range(5):
        assert script.decide("create_order", T0).granted
    interval = SECOND / 27
    first = script.decide("create_order", T0, max_wait_us=SECOND)
    second = script.decide("create_order", T0, max_wait_us=SECOND)
    assert first.granted and second.granted
    assert first.wait_us == pytest.approx(interval, abs=2)
    assert second.wait_us == pytest.approx(2 * interval, abs=3)
    too_long = script.decide("create_order", T0, max_wait_us=int(2.5 * interval))
    assert not too_long.granted and too_long.retry_after_us > 2.5 * interval


def fill_to(script: Script, endpoint: str, utilization: float) -> int:
    """Grant critical requests spread over the window until the pool's utilization passes `utilization`."""
    now = T0
    pool = CONFIG.endpoints[endpoint].pools
    capacity = CONFIG.effective_rate(CONFIG.pools[next(iter(pool))]) * CONFIG.utilization_window_s
    step = SECOND // 27
    granted = 0
    while granted < capacity * utilization / 100 + 1:
        decision = script.decide(endpoint, now, priority=Priority.CRITICAL)
        granted += decision.granted
        now += step
    return now


def test_priorities_shed_background_then_normal_never_critical(script: Script) -> None:
    now = fill_to(script, "get_candles", 85)
    background = script.decide("get_candles", now, priority=Priority.BACKGROUND)
    assert background.code is Code.SHED and background.retry_after_us > 0
    assert script.decide("get_candles", now, priority=Priority.NORMAL).granted
    now = fill_to(script, "get_candles", 97)
    assert script.decide("get_candles", now, priority=Priority.NORMAL).code is Code.SHED
    assert script.decide("get_candles", now, priority=Priority.CRITICAL).granted


def test_shed_retry_time_is_when_utilization_drops(script: Script) -> None:
    now = fill_to(script, "get_candles", 85)
    shed = script.decide("get_candles", now, priority=Priority.BACKGROUND)
    assert shed.code is Code.SHED
    later = now + shed.retry_after_us + 1
    assert script.decide("get_candles", later, priority=Priority.BACKGROUND).granted


def test_penalty_closes_the_pool_for_every_endpoint_on_it(script: Script) -> None:
    pool_key = script.plans["create_order"].keys[0]
    script.penalty(keys=[pool_key], args=[str(2 * SECOND), str(T0)])
    for endpoint in ("create_order", "get_candles"):
        decision = script.decide(endpoint, T0 + 1000)
        assert decision.code is Code.PENALTY and decision.retry_after_us == 2 * SECOND - 1000
    waited = script.decide("create_order", T0 + 1000, max_wait_us=3 * SECOND)
    assert waited.granted and waited.wait_us == 2 * SECOND - 1000
    # a shorter penalty reported later never shortens the first
    script.penalty(keys=[pool_key], args=[str(SECOND), str(T0 + 1000)])
    assert script.decide("get_candles", T0 + 1_500_000).code is Code.PENALTY


def test_cost_above_burst_can_never_be_granted(script: Script) -> None:
    assert script.decide("heavy", T0, cost=3).code is Code.TOO_COSTLY


def test_runtime_override_in_redis_wins_over_config(client: redis.Redis, script: Script) -> None:
    client.hset(script.plans["create_order"].keys[0], mapping={"o_rate": "60", "o_burst": "10"})
    granted = sum(script.decide("create_order", T0).granted for _ in range(12))
    assert granted == 10
    peek = script.decide("create_order", T0, cost=0)
    assert peek.code is Code.PEEK
    assert peek.pools[0].rate == 60 and peek.pools[0].burst == 10


def test_utilization_counts_the_window(script: Script) -> None:
    for i in range(27):
        assert script.decide("create_order", T0 + i * (SECOND // 27)).granted
    peek = script.decide("create_order", T0 + SECOND, cost=0)
    # 27 granted in the window over 27/s * 10 s available
    assert peek.pools[0].utilization_pct == pytest.approx(10.0, abs=0.05)
    gone = script.decide("create_order", T0 + 12 * SECOND, cost=0)
    assert gone.pools[0].utilization_pct == 0


def test_critical_is_not_queued_behind_waiting_market_data(script: Script) -> None:
    # 128 candle requests that may wait 5 s each arrive at once, then an order
    for _ in range(128):
        script.decide("get_candles", T0, max_wait_us=5 * SECOND)
    interval = SECOND / 27
    order = script.decide("create_order", T0, max_wait_us=5 * SECOND)
    assert order.granted
    assert order.wait_us <= interval + 1
    # only critical requests hold future slots: the market data was granted its burst and told when to ask again
    late = script.decide("get_candles", T0, max_wait_us=5 * SECOND)
    assert not late.granted and 0 < late.retry_after_us <= 2 * interval + 1
    assert all(p.utilization_pct <= 100 for p in late.pools)


def test_a_reservation_leaves_the_other_linked_pools_free(script: Script) -> None:
    # list_products draws on public (burst 3) and own (2/s, burst 2): own runs out first
    for _ in range(2):
        assert script.decide("list_products", T0, priority=Priority.CRITICAL).granted
    reserved = script.decide("list_products", T0, priority=Priority.CRITICAL, max_wait_us=SECOND)
    assert reserved.granted and reserved.wait_us > SECOND // 2
    assert [p.deferred for p in reserved.pools] == [True, False]  # public is taken when the slot comes
    # public is idle meanwhile: another endpoint on it is not held back by the reservation on own
    assert script.decide("server_time", T0 + 1000).granted


def test_the_clients_drawing_on_a_pool_are_counted(script: Script) -> None:
    for client in ("strategy-1", "executor-1", "strategy-1"):
        granted = script.decide("create_order", T0, client_id=client)
    assert granted.granted and granted.pools[0].clients == 2
    assert script.decide("create_order", T0, cost=0).pools[0].clients == 2
    # a client that drew nothing for client_ttl_s is no longer counted
    later = T0 + (CONFIG.client_ttl_s + 1) * SECOND
    assert script.decide("create_order", later, client_id="executor-1").pools[0].clients == 1
