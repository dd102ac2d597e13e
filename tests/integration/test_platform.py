"""The five services as real uvicorn processes: health, readiness, metrics, docs, auth, Redis outages."""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.redis_server import RedisServer
from devtools.stack import CONTRACT_PORTS
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration


def wait_for_status(url: str, status: int, timeout_s: float = 20.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    last: httpx.Response | None = None
    while time.monotonic() < deadline:
        try:
            last = httpx.get(url, timeout=3.0)
            if last.status_code == status:
                return last
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s}s; last: {last and last.text}")


def test_every_service_serves_health_readiness_metrics_and_docs(redis_url: str, start_stack: StackFactory) -> None:
    stack = start_stack(redis_url)
    for name in CONTRACT_PORTS:
        base = stack.url(name)
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok", "service": name}
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["redis"] == "ok"
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert f'trader_service_info{{service="{name}",trading_mode="sim"}} 1.0' in metrics.text
        assert "http_request_duration_seconds" in metrics.text
        assert httpx.get(f"{base}/docs").status_code == 200
        assert httpx.get(f"{base}/openapi.json").json()["info"]["title"] == f"trader {name}"


def test_dependent_readiness_checks_reach_the_other_services(redis_url: str, start_stack: StackFactory) -> None:
    stack = start_stack(redis_url)
    checks = httpx.get(f"{stack.url('strategy')}/readyz").json()["checks"]
    assert checks == {
        "config": "ok",
        "redis": "ok",
        "ratelimit": "ok",
        "universe": "ok",
        "executor": "ok",
        "exchange": "ok",
    }
    stack.processes["universe"].terminate()
    stack.processes["universe"].wait(timeout=15)
    body = wait_for_status(f"{stack.url('strategy')}/readyz", 503).json()
    assert body["details"]["failing"] == ["universe"]


def test_readiness_probes_do_not_spend_the_exchanges_public_budget(redis_url: str, start_stack: StackFactory) -> None:
    """A kubelet probes /readyz every few seconds per pod; the exchange's answer is remembered for 30 s, so the
    probes of three services x many replicas do not become calls on the exchange's 10/s, outside the quota."""
    stack = start_stack(redis_url, names=["ratelimit", "exchange_sim", "universe", "executor"])
    sim = stack.url("exchange_sim")

    def time_calls() -> int:
        return int(httpx.get(f"{sim}/sim/stats").json()["endpoints"]["server_time"]["requests"])

    before = time_calls()
    assert before >= 2, "coming ready, each service asked the exchange once"
    for _ in range(20):
        for name in ("universe", "executor"):
            assert httpx.get(f"{stack.url(name)}/readyz").json()["checks"]["exchange"] == "ok"
    assert time_calls() - before <= 2, "40 probes asked the exchange more than once per service"


def test_readyz_follows_redis_down_and_back_without_restart(
    private_redis: RedisServer, start_stack: StackFactory
) -> None:
    stack = start_stack(private_redis.url, names=["ratelimit", "exchange_sim"])
    readyz = f"{stack.url('ratelimit')}/readyz"
    assert httpx.get(readyz).status_code == 200
    pid = stack.processes["ratelimit"].pid

    private_redis.stop()
    body = wait_for_status(readyz, 503).json()
    assert body["details"]["failing"] == ["redis"]
    assert "redis" in body["message"]

    private_redis.start()
    wait_for_status(readyz, 200)
    assert stack.processes["ratelimit"].pid == pid and stack.processes["ratelimit"].poll() is None
