"""The quota client against real ratelimit processes: its fallback share, connection faults and Redis trouble."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import redis
from prometheus_client import CollectorRegistry

from bench.measure import most_in_window
from devtools.redis_server import RedisServer, free_port
from devtools.stack import ROOT
from services.ratelimit.settings import RatelimitSettings
from shared.quota import QuotaClient
from shared.ratelimits import RateLimitConfig
from shared.settings import DEV_API_TOKEN, load_settings
from tests.conftest import StackFactory, ratelimits_config

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
LIMITS = {
    "ratelimit": {
        "safety_margin_pct": 10,
        # the old fallback trusted this figure: each process took rate / 1
        "expected_replicas": 1,
        "pools": {"private": {"rate": 20, "burst": 4}, "public": {"rate": 10, "burst": 2}},
        "endpoints": {
            "create_order": {"priority": "critical", "pools": {"private": 1}},
            "get_candles": {"priority": "normal", "pools": {"private": 1}},
        },
    }
}


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return ratelimits_config(tmp_path, LIMITS)


@pytest.fixture
def limits(config_dir: Path) -> RateLimitConfig:
    return load_settings(RatelimitSettings, config_dir=config_dir).ratelimit


def client_for(base: str, limits: RateLimitConfig, **kwargs: object) -> QuotaClient:
    return QuotaClient(
        base_url=base, token=DEV_API_TOKEN, config=limits, client_id="test", registry=CollectorRegistry(), **kwargs
    )


def test_two_client_processes_in_fallback_stay_together_under_the_pool_limit(
    redis_url: str, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    stack = start_stack(redis_url, names=["ratelimit"], extra_env={"CONFIG_DIR": str(config_dir)})
    base = stack.url("ratelimit")
    seconds = 3.0
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.quota_worker",
                base,
                str(config_dir),
                f"worker-{i}",
                str(seconds),
            ],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        assert httpx.get(f"{base}/v1/quota/private").json()["clients"] == 2
        time.sleep(0.3)  # each has drawn again since both were counted
        stack.stop()  # both clients now limit themselves locally
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [orjson.loads(worker.communicate(timeout=seconds + 30)[0]) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    grants = [t for result in results for t in result["grants"]]
    assert all(result["fallback"] == len(result["grants"]) > 0 for result in results)
    pool = limits.pools["private"]
    rate = limits.effective_rate(pool)
    for window_s in (0.25, 1.0, seconds):
        most = most_in_window(grants, window_s)
        print(f"fallback, 2 processes: at most {most} grants in {window_s}s (limit {rate * window_s + pool.burst:.1f})")
        assert most <= rate * window_s + pool.burst
    assert len(grants) >= 0.8 * rate * seconds  # and they did use the budget between them


class ClosingServer:
    """Answers one acquire per connection and keeps it open, then drops the connection on the next request
    without answering: a keep-alive connection the server has already closed."""

    def __init__(self) -> None:
        self.port = free_port()
        self.answered = 0
        self.dropped = 0
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                (
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                ),
                0,
            )
            await reader.readexactly(length)
            if not first:
                self.dropped += 1
                writer.transport.abort()
                return
            first = False
            body = orjson.dumps(
                {"granted": True, "waited_ms": 0, "remaining": 3, "utilization_pct": 1.0, "clients": {"private": 1}}
            )
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            self.answered += 1

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


async def test_a_connection_the_server_closed_is_retried_on_a_fresh_one(limits: RateLimitConfig) -> None:
    server = ClosingServer()
    await server.start()
    client = client_for(f"http://127.0.0.1:{server.port}", limits)
    try:
        assert not (await client.take("create_order")).fallback
        second = await client.take("create_order")
        assert server.dropped == 1 and server.answered == 2
        assert not second.fallback and not client.in_fallback
    finally:
        await client.aclose()
        await server.stop()


async def test_callers_never_wait_on_a_hanging_service_while_in_fallback(limits: RateLimitConfig) -> None:
    port = free_port()
    client = client_for(f"http://127.0.0.1:{port}", limits, probe_s=0.1, max_wait_ms=0)
    hanging = socket.socket()
    try:
        assert (await client.take("create_order")).fallback  # nothing listens: fallback at once
        hanging.bind(("127.0.0.1", port))
        hanging.listen(128)  # now it accepts connections and never answers
        await asyncio.sleep(0.3)
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(client.take("create_order") for _ in range(4)), return_exceptions=True), timeout=3
        )
        assert all(not isinstance(r, BaseException) and r.fallback for r in results), results
        assert time.monotonic() - started < 3
        assert client.in_fallback
    finally:
        await client.aclose()
        hanging.close()


async def test_redis_refusing_writes_is_503_and_the_client_falls_back(
    private_redis: RedisServer, start_stack: StackFactory, config_dir: Path, limits: RateLimitConfig
) -> None:
    stack = start_stack(private_redis.url, names=["ratelimit"], extra_env={"CONFIG_DIR": str(config_dir)})
    base = stack.url("ratelimit")
    admin = redis.Redis.from_url(private_redis.url)
    client = client_for(base, limits, max_wait_ms=0, probe_s=0.1)
    try:
        assert not (await client.take("create_order")).fallback
        for fault, undo in (
            (("REPLICAOF", "127.0.0.1", str(free_port())), ("REPLICAOF", "NO", "ONE")),  # READONLY, as after a failover
            (("CONFIG", "SET", "maxmemory", "1"), ("CONFIG", "SET", "maxmemory", "0")),  # OOM
        ):
            admin.execute_command(*fault)
            answer = httpx.post(f"{base}/v1/acquire", json={"endpoint": "create_order"}, headers=AUTH)
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"] == "unavailable" and answer.json()["details"]["component"] == "redis"
            assert (await client.take("create_order")).fallback
            await asyncio.sleep(0.5)  # its probes find the service answering, but Redis still refusing writes
            assert client.in_fallback
            admin.execute_command(*undo)
            deadline = time.monotonic() + 10
            while client.in_fallback:
                assert time.monotonic() < deadline, "the probe did not find the service back"
                await asyncio.sleep(0.05)
            assert not (await client.take("create_order")).fallback
    finally:
        await client.aclose()
        admin.close()
