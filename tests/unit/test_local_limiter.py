"""The quota client's local fallback: same GCRA rule, at the replica's share of each pool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.local_limiter import LocalLimiter
from shared.ratelimits import RateLimitConfig

CONFIG = RateLimitConfig.model_validate(
    {
        "safety_margin_pct": 10,
        "expected_replicas": 3,
        "pools": {
            "private": {"rate": 30, "burst": 3},
            "public": {"rate": 10, "burst": 2},
            "own": {"rate": 1, "burst": 1},
        },
        "endpoints": {
            "create_order": {"pools": {"private": 1}},
            "list_products": {"pools": {"public": 1, "own": 1}},
        },
    }
)
SHARE = 30 * 0.9 / 3  # 9 per second for one of three replicas


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=0.5), st.integers(1, 3), st.sampled_from([0.0, 0.05, 0.5])),
        max_size=100,
    )
)
def test_grants_stay_within_the_replica_share(requests: list[tuple[float, int, float]]) -> None:
    limiter = LocalLimiter(CONFIG)
    now = 1000.0
    grants = []
    for gap, cost, max_wait in requests:
        now += gap
        decision = limiter.decide("create_order", cost=cost, now=now, max_wait_s=max_wait)
        if decision.granted:
            assert decision.wait_s <= max_wait + 1e-9
            grants.append((now + decision.wait_s, cost))
        else:
            assert decision.retry_after_s > max_wait
    grants.sort()
    for i, (start, _) in enumerate(grants):
        for window in (0.1, 1.0, 5.0):
            taken = sum(c for at, c in grants[i:] if at < start + window)
            assert taken <= SHARE * window + 3 + 1e-9


def test_linked_pools_take_all_or_nothing() -> None:
    limiter = LocalLimiter(CONFIG)
    assert limiter.decide("list_products", cost=1, now=0.0).granted
    before = dict(limiter.tat)
    denied = limiter.decide("list_products", cost=1, now=0.0)
    assert not denied.granted and denied.pool == "own"
    assert limiter.tat == before


def test_penalty_blocks_until_its_time() -> None:
    limiter = LocalLimiter(CONFIG)
    limiter.penalize("private", until=10.0)
    denied = limiter.decide("create_order", cost=1, now=9.0)
    assert not denied.granted and denied.retry_after_s == pytest.approx(1.0)
    waited = limiter.decide("create_order", cost=1, now=9.0, max_wait_s=2.0)
    assert waited.granted and waited.wait_s == pytest.approx(1.0)


def test_in_fallback_an_order_is_not_queued_behind_waiting_market_data() -> None:
    limiter = LocalLimiter(CONFIG, clients={"private": 1})
    for _ in range(128):
        limiter.decide("create_order", cost=1, now=0.0, max_wait_s=5.0, reserve=False)
    order = limiter.decide("create_order", cost=1, now=0.0, max_wait_s=5.0, reserve=True)
    assert order.granted and order.wait_s <= 1 / (30 * 0.9) + 1e-9
