"""Fixtures shared by every test: a Redis, a key prefix per test, and services started as `make run` does."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import yaml
from hypothesis import HealthCheck, Phase
from prometheus_client import CollectorRegistry

from devtools.redis_server import RedisServer, delete_prefix, free_port, redis_answers
from devtools.stack import CONTRACT_PORTS, Stack
from services.universe.settings import UniverseSettings
from shared.exchange.client import ExchangeClient
from shared.exchange.factory import api_key, create_exchange_client
from shared.settings import load_settings

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _docker_redis() -> Iterator[str] | None:
    """A Redis container through testcontainers, where a Docker engine answers."""
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:  # no engine here; the caller falls back to a local server
        return None
    from testcontainers.redis import RedisContainer

    def run() -> Iterator[str]:
        with RedisContainer("redis:7.4.1-alpine") as container:
            yield f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"

    return run()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL if it answers, else a Docker container, else a redis-server (or embedded valkey) on a free port."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    if redis_answers(url):
        yield url
        return
    container = _docker_redis()
    if container is not None:
        yield from container
        return
    server = RedisServer(port=free_port(), data_dir=tmp_path_factory.mktemp("redis"), aof=False).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis server of this test's own, which the test may stop and start again."""
    server = RedisServer(port=free_port(), data_dir=tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


StackFactory = Callable[..., Stack]


@pytest.fixture
def exchange_stack(redis_url: str, start_stack: StackFactory) -> Stack:
    """The ratelimit service and the simulator, for tests that drive the exchange client themselves."""
    return start_stack(redis_url, names=["ratelimit", "exchange_sim"])


@pytest.fixture
async def exchange(exchange_stack: Stack, key_prefix: str) -> AsyncIterator[ExchangeClient]:
    """The exchange client a service would build, on `exchange_stack`, under this test's key prefix."""
    settings = load_settings(
        UniverseSettings,
        ratelimit_url=exchange_stack.url("ratelimit"),
        exchange_api_url=exchange_stack.url("exchange_sim"),
        key_prefix=key_prefix,
    )
    client = create_exchange_client(settings, settings.ratelimit, CollectorRegistry(), api_key(settings))
    yield client
    await client.aclose()
    await client.quota.aclose()


def ratelimits_config(tmp_path: Path, limits: dict[str, object]) -> Path:
    """A CONFIG_DIR holding only this ratelimits.yaml."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "ratelimits.yaml").write_text(yaml.safe_dump(limits))
    return folder


@pytest.fixture
def start_stack(tmp_path: Path, key_prefix: str) -> Iterator[StackFactory]:
    """Start some or all services on free ports against a Redis, with this test's key prefix."""
    stacks: list[Stack] = []

    def start(
        redis_url: str, names: list[str] | None = None, extra_env: dict[str, str] | None = None, ready: bool = True
    ) -> Stack:
        ports = {name: free_port() for name in CONTRACT_PORTS}
        stack = Stack(
            ports=ports,
            redis_url=redis_url,
            extra_env={"KEY_PREFIX": key_prefix} | (extra_env or {}),
            log_dir=tmp_path / f"logs{len(stacks)}",
        )
        stacks.append(stack)
        stack.start(names)
        if ready:
            stack.wait_ready()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def bounded_examples(max_examples: int) -> hypothesis.settings:
    """The same few examples on every run, reported as found: each example is a real request or a real file load,
    and shrinking would make many more."""
    return hypothesis.settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


@contextlib.contextmanager
def generous_ratelimit(redis_url: str, folder: Path, token: str, rate: int) -> Iterator[tuple[Stack, dict[str, Any]]]:
    """One ratelimit process with every pool at `rate` (never waits), its own key prefix, its keys deleted after;
    the stack and the limits it runs with."""
    limits = yaml.safe_load((Path(__file__).parents[1] / "config" / "ratelimits.yaml").read_text())
    for pool in limits["ratelimit"]["pools"].values():
        pool.update(rate=rate, burst=rate)
    (folder / "ratelimits.yaml").write_text(yaml.safe_dump(limits))
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    stack = Stack(
        ports={name: free_port() for name in CONTRACT_PORTS},
        redis_url=redis_url,
        extra_env={"KEY_PREFIX": prefix, "CONFIG_DIR": str(folder), "TRADER_API_TOKEN": token},
        log_dir=folder / "logs",
    )
    try:
        stack.start(["ratelimit"])
        stack.wait_ready()
        yield stack, limits
    finally:
        stack.stop()
        delete_prefix(redis_url, prefix)
