"""The executor against the real simulator, ratelimit service and Redis; the simulator's own order counts are the
referee of "nothing done twice"."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from devtools.stack import Stack
from services.executor.ledger import Ledger
from shared.proposal import Proposal
from shared.redis import KeySpace, create_redis
from shared.settings import DEV_API_TOKEN, DEV_OPERATOR_TOKEN
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {DEV_OPERATOR_TOKEN}"}
ENV = {"WORKER__CLAIM_IDLE_S": "1", "RISK__MAX_OPEN_POSITIONS": "20"}


def proposal(product_id: str = "BTC-USD", side: str = "BUY", **fields: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "proposal_id": str(uuid.uuid4()),
        "product_id": product_id,
        "side": side,
        "conviction": 0.5,
        "components": {"strength": 0.5},
        "quote_size": "25",
        "stop_loss_pct": 50,
        "take_profit_pct": 50,
        "time_stop_s": 3600,
        "created_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=120)).isoformat(),
    } | fields


def orders_placed(stack: Stack) -> int:
    stats = httpx.get(f"{stack.url('exchange_sim')}/sim/stats").json()
    return sum(count for result, count in stats["orders"].items() if result != "repeated")


def settle(url: str, proposal_id: str, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = httpx.get(f"{url}/v1/proposals/{proposal_id}").json()
        if outcome["status"] not in ("pending", "ordered"):
            return outcome
        assert time.monotonic() < deadline, f"proposal still {outcome['status']}"
        time.sleep(0.05)


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/proposals", json=body, headers=AUTH)


HELD_S = 25  # how long a test holds a lock as another replica would; its checks end within this


@contextlib.contextmanager
def held_by_another_replica(stack: Stack, redis_url: str, lock: str) -> Iterator[None]:
    """One of the executor's locks (`entries`, `position:<product>`) taken as another replica would, for HELD_S."""
    key = f"{stack.extra_env['KEY_PREFIX']}executor:lock:{lock}"
    client = redis.Redis.from_url(redis_url)
    client.set(key, "another-replica/0", px=HELD_S * 1000)
    try:
        yield
    finally:
        client.delete(key)
        client.close()


@pytest.fixture
def stack(redis_url: str, start_stack: StackFactory) -> Stack:
    return start_stack(redis_url, names=["ratelimit", "exchange_sim", "executor"], extra_env=ENV)


async def test_the_same_proposal_five_times_at_once_makes_one_order(stack: Stack) -> None:
    url = stack.url("executor")
    body = proposal()
    async with httpx.AsyncClient(headers=AUTH) as http:
        answers = await asyncio.gather(*(http.post(f"{url}/v1/proposals", json=body) for _ in range(5)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 202]
    outcome = settle(url, body["proposal_id"])
    assert outcome["status"] == "filled" and outcome["order_id"]
    assert post(url, body).json()["order_id"] == outcome["order_id"]  # again: the first outcome
    assert orders_placed(stack) == 1
    assert len(httpx.get(f"{url}/v1/trades").json()) == 1


def test_eleven_proposals_in_an_hour_make_ten_orders_and_one_rejection(stack: Stack) -> None:
    url = stack.url("executor")
    bodies = [proposal() for _ in range(11)]
    for body in bodies:
        assert post(url, body).status_code == 202
    outcomes = [settle(url, body["proposal_id"]) for body in bodies]
    # worked on concurrently: which one finds the hour full is not fixed, that exactly one does is
    assert sorted(o["status"] for o in outcomes) == ["filled"] * 10 + ["rejected"]
    assert [o["reason"] for o in outcomes if o["status"] == "rejected"] == ["max_trades_per_hour"]
    assert orders_placed(stack) == 10
    metrics = httpx.get(f"{url}/metrics").text
    assert 'trader_proposals_rejected_total{reason="max_trades_per_hour"} 1.0' in metrics
    assert "trader_trades_per_hour 10.0" in metrics
    # right after a restart the figure comes from the ledger
    stack.stop()
    stack.start(["ratelimit", "exchange_sim", "executor"])
    stack.wait_ready()
    assert "trader_trades_per_hour 10.0" in httpx.get(f"{url}/metrics").text


def test_two_replicas_together_keep_the_hourly_limit_across_products(
    stack: Stack, redis_url: str, start_stack: StackFactory
) -> None:
    shared = ENV | {
        "RATELIMIT_URL": stack.url("ratelimit"),
        "EXCHANGE_API_URL": stack.url("exchange_sim"),
        "KEY_PREFIX": stack.extra_env["KEY_PREFIX"],
    }
    other = start_stack(redis_url, names=["executor"], extra_env=shared)
    replicas = [stack.url("executor"), other.url("executor")]
    products = ["BTC-USD", "ETH-USD", "SOL-USD", "XRP-USD", "DOGE-USD", "ADA-USD"]
    bodies = [proposal(products[i % len(products)]) for i in range(14)]
    with ThreadPoolExecutor(max_workers=14) as pool:  # all at once, split across both replicas
        answers = list(pool.map(lambda i: post(replicas[i % 2], bodies[i]), range(14)))
    assert all(answer.status_code == 202 for answer in answers)
    outcomes = [settle(replicas[0], body["proposal_id"], timeout_s=60) for body in bodies]
    assert Counter(o["status"] for o in outcomes) == {"filled": 10, "rejected": 4}
    assert {o["reason"] for o in outcomes if o["status"] == "rejected"} == {"max_trades_per_hour"}
    assert orders_placed(stack) == 10


def test_killed_after_placing_and_before_recording_the_order_is_found_not_placed_again(stack: Stack) -> None:
    url, sim = stack.url("executor"), stack.url("exchange_sim")
    body = proposal()
    httpx.post(f"{sim}/sim/faults", json={"latency_ms": 1500}, headers=AUTH)
    try:
        assert post(url, body).status_code == 202
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/v1/proposals/{body['proposal_id']}").json()["status"] != "ordered":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        while orders_placed(stack) == 0:  # placed; the executor now waits 1.5 s to read it back
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stack.processes["executor"].send_signal(signal.SIGKILL)
        stack.processes["executor"].wait()
    finally:
        httpx.post(f"{sim}/sim/faults", json={}, headers=AUTH)
    assert orders_placed(stack) == 1  # placed, never recorded by the dead process
    stack.start(["executor"])
    stack.wait_ready()
    outcome = settle(url, body["proposal_id"])
    print(f"\nafter SIGKILL and restart: outcome {outcome['status']}, orders on the simulator {orders_placed(stack)}")
    assert outcome["status"] == "filled"
    assert orders_placed(stack) == 1
    assert len(httpx.get(f"{url}/v1/trades").json()) == 1


def test_positions_exit_at_their_stop_loss_and_take_profit(stack: Stack) -> None:
    url = stack.url("executor")
    tight = proposal(stop_loss_pct=0.0001, take_profit_pct=0.0001)  # any move of the bid reaches one of them
    assert post(url, tight).status_code == 202
    assert settle(url, tight["proposal_id"])["status"] in ("filled", "exited")
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/v1/proposals/{tight['proposal_id']}").json()["status"] != "exited":
        assert time.monotonic() < deadline, "the position was not exited"
        time.sleep(0.1)
    trades = httpx.get(f"{url}/v1/trades").json()
    exit_trade = next(t for t in trades if t["side"] == "SELL")
    assert exit_trade["exit_reason"] in ("stop_loss", "take_profit") and exit_trade["realized_quote"] is not None
    assert httpx.get(f"{url}/v1/positions").json() == []
    pnl = httpx.get(f"{url}/v1/pnl").json()
    assert pnl["closed_trades"] == 1 and pnl["open_positions"] == 0
    again = proposal()
    post(url, again)
    assert settle(url, again["proposal_id"])["reason"] == "cooldown"  # the product rests after its exit


def test_halt_and_resume_and_bad_proposals(stack: Stack) -> None:
    url = stack.url("executor")
    assert httpx.post(f"{url}/v1/halt", headers=OPERATOR).json() == {"halted": True}
    halted = proposal()
    post(url, halted)
    assert settle(url, halted["proposal_id"])["reason"] == "halted"
    assert "trader_halted 1.0" in httpx.get(f"{url}/metrics").text
    httpx.post(f"{url}/v1/resume", headers=OPERATOR)
    resumed = proposal()
    post(url, resumed)
    assert settle(url, resumed["proposal_id"])["status"] == "filled"
    sell = proposal("ETH-USD", side="SELL")
    post(url, sell)
    assert settle(url, sell["proposal_id"])["reason"] == "no_position"
    expired = proposal(expires_at=(datetime.now(UTC) + timedelta(milliseconds=1)).isoformat())
    time.sleep(0.05)
    post(url, expired)
    assert settle(url, expired["proposal_id"])["reason"] == "expired"
    bad = proposal(conviction=1.5)
    refused = post(url, bad)
    assert refused.status_code == 422 and refused.json()["details"]["fields"][0]["field"] == "conviction"
    assert httpx.get(f"{url}/v1/proposals/{bad['proposal_id']}").status_code == 404  # nothing stored


def test_an_exit_and_a_stale_proposal_do_not_wait_for_the_turn_of_buys(stack: Stack, redis_url: str) -> None:
    url = stack.url("executor")
    opened = proposal(time_stop_s=2)
    post(url, opened)
    assert settle(url, opened["proposal_id"])["status"] == "filled"
    # Another replica's buy decision holds the turn of buys (as one stuck on a slow exchange would).
    with held_by_another_replica(stack, redis_url, "entries"):
        waiting = proposal()  # a buy of the open position's product: it waits for its turn
        stale = proposal("ETH-USD", expires_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat())
        assert post(url, waiting).status_code == 202 and post(url, stale).status_code == 202
        deadline = time.monotonic() + HELD_S - 5  # both must happen while the turn is held
        while not (
            httpx.get(f"{url}/v1/proposals/{opened['proposal_id']}").json()["status"] == "exited"
            and httpx.get(f"{url}/v1/proposals/{stale['proposal_id']}").json()["status"] == "rejected"
        ):
            assert time.monotonic() < deadline, "the time stop or the stale proposal waited for the buys' turn"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/proposals/{stale['proposal_id']}").json()["reason"] == "expired"
        assert httpx.get(f"{url}/v1/proposals/{waiting['proposal_id']}").json()["status"] == "pending"
    assert settle(url, waiting["proposal_id"])["reason"] == "cooldown"  # decided in its turn, after the exit


async def test_a_rejection_made_without_the_locks_and_an_order_never_both_land(redis_url: str, key_prefix: str) -> None:
    redis = create_redis(redis_url)
    ledger = Ledger(redis, KeySpace(key_prefix, "executor"))
    try:
        stale, ordering = (Proposal.model_validate(proposal()) for _ in range(2))
        for p in (stale, ordering):
            assert await ledger.accept(p) is None
        # rejected as stale first: the worker that read it pending does not order it
        assert await ledger.record_if(stale.proposal_id, "rejected", when=("pending",), reason="expired") == "pending"
        assert await ledger.record_if(stale.proposal_id, "ordered", when=("pending", "ordered")) == "rejected"
        assert (await ledger.outcome(stale.proposal_id)).status == "rejected"  # type: ignore[union-attr]
        # ordered first: the stale rejection leaves it to be resumed
        assert await ledger.record_if(ordering.proposal_id, "ordered", when=("pending", "ordered")) == "pending"
        assert (
            await ledger.record_if(ordering.proposal_id, "rejected", when=("pending",), reason="expired") == "ordered"
        )
        outcome = await ledger.outcome(ordering.proposal_id)
        assert outcome is not None and outcome.status == "ordered" and outcome.reason is None
        assert await ledger.record_if("no-such-proposal", "rejected", when=("pending",)) is None
    finally:
        await redis.aclose()


def test_an_exit_held_up_does_not_hold_up_the_others(stack: Stack, redis_url: str) -> None:
    url = stack.url("executor")
    first = proposal("BTC-USD", time_stop_s=5)  # watched first: the positions are read in product order
    post(url, first)
    assert settle(url, first["proposal_id"])["status"] == "filled"
    # Another replica holds BTC-USD's position lock (as one whose exit hangs on the exchange would).
    with held_by_another_replica(stack, redis_url, "position:BTC-USD"):
        second = proposal("ETH-USD", time_stop_s=5)
        post(url, second)
        assert settle(url, second["proposal_id"])["status"] == "filled"
        deadline = time.monotonic() + HELD_S - 5  # while the lock is held
        while httpx.get(f"{url}/v1/proposals/{second['proposal_id']}").json()["status"] != "exited":
            assert time.monotonic() < deadline, "ETH-USD's time stop waited for BTC-USD's exit"
            time.sleep(0.1)
        assert httpx.get(f"{url}/v1/proposals/{first['proposal_id']}").json()["status"] == "filled"  # still held
    deadline = time.monotonic() + 30
    while httpx.get(f"{url}/v1/proposals/{first['proposal_id']}").json()["status"] != "exited":
        assert time.monotonic() < deadline, "BTC-USD was not exited once its lock was free"
        time.sleep(0.1)
