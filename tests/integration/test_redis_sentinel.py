"""The services behind Redis Sentinel follow a real failover: a master, a replica and three sentinels as real
processes, the master SIGKILLed, and quota, the universe's cache and the executor's stream working again on the
promoted replica, seen only through the services' HTTP APIs."""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.chart_pods import FAST_FAILOVER, ChartSentinelPods
from devtools.redis_server import RedisSentinelCluster, SentinelWatched, redis_answers, sync_client
from devtools.stack import Stack
from services.executor.ledger import INTAKE_LUA
from services.ratelimit.gcra import ACQUIRE_LUA
from shared.settings import DEV_API_TOKEN
from tests.conftest import StackFactory
from tests.integration.test_executor import proposal, settle

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
SERVICES = ["ratelimit", "exchange_sim", "universe", "executor"]
# The executor claims a dead worker's entry after 1 s; the universe does not rebuild on its own during the test, so
# what it serves after the failover is the build it kept in Redis before it.
ENV = {"WORKER__CLAIM_IDLE_S": "1", "RISK__MAX_OPEN_POSITIONS": "20", "UNIVERSE__REFRESH_INTERVAL_S": "3600"}
PROMOTION_S = 20.0  # kill -> a replica promoted (down-after 1 s, then the vote and the promotion)
RECOVERY_S = 15.0  # promotion -> every service working again


@pytest.fixture(params=["processes", "chart"])
def cluster(request: pytest.FixtureRequest) -> Iterator[SentinelWatched]:
    """processes: 1 master + 1 replica + 3 sentinels; chart: the Helm chart's three Redis + Sentinel pods
    (devtools/chart_pods.py; killing the master loses its pod's sentinel too). Quorum 2, master down after 1 s."""
    with tempfile.TemporaryDirectory(prefix="sentinel-") as folder:
        sentinels: RedisSentinelCluster | ChartSentinelPods
        if request.param == "chart":
            sentinels = ChartSentinelPods(folder=Path(folder), values=FAST_FAILOVER)
        else:
            sentinels = RedisSentinelCluster(
                data_dir=Path(folder), replicas=1, sentinels=3, quorum=2, down_after_ms=1000, failover_timeout_ms=3000
            )
        sentinels.start()
        try:
            yield sentinels
        finally:
            sentinels.stop()


def acquire(stack: Stack) -> httpx.Response:
    return httpx.post(f"{stack.url('ratelimit')}/v1/acquire", json={"endpoint": "get_candles"}, headers=AUTH)


def answer(response: httpx.Response) -> str:
    """A short account of an answer that was not the one wanted."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code}"
    return f"{response.status_code} {body.get('error', '')}".strip() if isinstance(body, dict) else str(response)


def probe_outage(stack: Stack, stop: threading.Event, seen: dict[str, Counter[str]]) -> None:
    """What the services answer while there is no master: ask each every 0.2 s until told to stop."""
    calls: dict[str, Callable[[], httpx.Response]] = {
        "ratelimit": lambda: acquire(stack),
        "universe": lambda: httpx.get(f"{stack.url('universe')}/v1/universe", timeout=5),
        "executor": lambda: httpx.get(f"{stack.url('executor')}/v1/trades", timeout=5),
    }
    while not stop.wait(0.2):
        for name, call in calls.items():
            try:
                response = call()
            except httpx.HTTPError as exc:
                seen[name][type(exc).__name__] += 1
                continue
            seen[name]["200" if response.status_code == 200 else answer(response)] += 1


def scripts_on(port: int) -> dict[str, bool]:
    """Whether the ratelimit's and the executor's Lua scripts are in this server's script cache."""
    shas = {
        name: hashlib.sha1(text.encode()).hexdigest()
        for name, text in (("acquire", ACQUIRE_LUA), ("intake", INTAKE_LUA))
    }
    with sync_client(f"redis://127.0.0.1:{port}/0") as server:
        return dict(zip(shas, server.script_exists(*shas.values()), strict=True))


def test_quota_cache_and_the_executor_stream_follow_a_sentinel_failover(
    cluster: SentinelWatched, start_stack: StackFactory, key_prefix: str
) -> None:
    assert redis_answers(cluster.url)  # the devtools' blocking client takes the same URL
    stack = start_stack(cluster.url, names=SERVICES, extra_env=ENV)
    executor, universe = stack.url("executor"), stack.url("universe")

    # Before: quota granted, the universe built and its product list cached, a proposal filled.
    granted = acquire(stack)
    assert granted.status_code == 200 and granted.json()["granted"] is True
    built = httpx.get(f"{universe}/v1/universe", timeout=30)
    assert built.status_code == 200 and built.json()["size"] > 0
    cache_before = httpx.get(f"{universe}/v1/cache").json()
    assert cache_before["fresh"] is True
    first = proposal("BTC-USD")
    assert httpx.post(f"{executor}/v1/proposals", json=first, headers=AUTH).status_code == 202
    first_outcome = settle(executor, first["proposal_id"])
    assert first_outcome["status"] == "filled", first_outcome

    # Replication is asynchronous: a write of the test's own, acknowledged by the replica (WAIT), means every
    # write before it (the services') is on the replica too, so what it holds after the promotion is all of it.
    old = cluster.master_port
    with sync_client(f"redis://127.0.0.1:{old}/0") as master:
        master.set(f"{key_prefix}sentinel:replicated", "1")
        assert master.wait(1, 1000) >= 1, "no replica acknowledged the writes before the kill"
    scripts_before = scripts_on(old)

    outage: dict[str, Counter[str]] = {name: Counter() for name in ("ratelimit", "universe", "executor")}
    stop_probing = threading.Event()
    prober = threading.Thread(target=probe_outage, args=(stack, stop_probing, outage), daemon=True)
    killed_at = time.monotonic()
    cluster.kill(old)
    prober.start()
    try:
        new = cluster.wait_for_failover(old, timeout_s=PROMOTION_S)
    finally:
        promoted_at = time.monotonic()
        stop_probing.set()
        prober.join()
    # The executor's intake script (a redis-py Script from register_script) is run by POST /v1/proposals only, so
    # whether the new master has it now is known; Redis does not replicate its script cache.
    scripts_at_promotion = scripts_on(new)

    # After: each service polled until it works again on the promoted replica.
    second = proposal("ETH-USD")
    state: dict[str, Any] = {"posted": False}
    failures: dict[str, Counter[str]] = {name: Counter() for name in ("ratelimit", "universe", "executor")}

    def quota_works() -> bool:
        response = acquire(stack)
        if response.status_code == 200 and response.json()["granted"]:
            return True
        failures["ratelimit"][answer(response)] += 1
        return False

    def universe_works() -> bool:
        response = httpx.get(f"{universe}/v1/universe", timeout=5)
        if response.status_code != 200:
            failures["universe"][answer(response)] += 1
            return False
        # the build kept in Redis before the failover, not one made again after it
        assert response.json()["built_at"] == built.json()["built_at"]
        return True

    def executor_works() -> bool:
        if not state["posted"]:
            response = httpx.post(f"{executor}/v1/proposals", json=second, headers=AUTH)
            if response.status_code not in (200, 202):  # 200: an earlier attempt was stored after all
                failures["executor"][answer(response)] += 1
                return False
            state["posted"] = time.monotonic() - promoted_at
        outcome = httpx.get(f"{executor}/v1/proposals/{second['proposal_id']}").json()
        assert outcome["status"] in ("pending", "ordered", "filled"), outcome
        return bool(outcome["status"] == "filled")

    checks: dict[str, Callable[[], bool]] = {
        "ratelimit": quota_works,
        "universe": universe_works,
        "executor": executor_works,
    }
    recovered: dict[str, float] = {}
    while len(recovered) < len(checks):
        for name, works in checks.items():
            if name not in recovered:
                try:
                    ok = works()
                except httpx.HTTPError as exc:
                    failures[name][type(exc).__name__] += 1
                    ok = False
                if ok:
                    recovered[name] = time.monotonic() - promoted_at
        assert time.monotonic() - promoted_at < RECOVERY_S, (
            f"not working {RECOVERY_S:g}s after the promotion: {sorted(set(checks) - set(recovered))}; "
            f"answers meanwhile: {failures}"
        )
        time.sleep(0.05)

    # What was there before the kill is still there: the first proposal's outcome, the cached product list.
    assert httpx.get(f"{executor}/v1/proposals/{first['proposal_id']}").json() == first_outcome
    trades = httpx.get(f"{executor}/v1/trades").json()
    assert {t["proposal_id"] for t in trades} == {first["proposal_id"], second["proposal_id"]}
    products = httpx.get(f"{universe}/v1/products")
    assert products.status_code == 200
    cache_after = httpx.get(f"{universe}/v1/cache").json()
    assert cache_after["fetched_at"] == cache_before["fetched_at"] and cache_after["hits"] > cache_before["hits"]
    for name in SERVICES:
        assert httpx.get(f"{stack.url(name)}/readyz").status_code == 200, name
    assert cluster.master_port == new and redis_answers(cluster.url)
    scripts_now = scripts_on(new)
    assert all(scripts_now.values())  # whatever the new master lacked, the services loaded on NOSCRIPT

    print(
        f"\nsentinel failover ({type(cluster).__name__}): master :{old} SIGKILLed,"
        f" replica :{new} promoted after {promoted_at - killed_at:.2f} s"
        f"\nLua scripts cached: old master {scripts_before}, new master at promotion {scripts_at_promotion}"
        f" and at the end {scripts_now}"
        f"\nanswers while waiting for the promotion: { {name: dict(seen) for name, seen in outage.items()} }"
    )
    for name in checks:
        extra = f" (proposal accepted after {state['posted']:.2f} s)" if name == "executor" else ""
        print(
            f"{name}: working {recovered[name]:.2f} s after the promotion{extra}; "
            f"answers before that: {dict(failures[name]) or 'none'}"
        )
