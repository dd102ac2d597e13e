"""Integration fixtures: the services as real processes, started the way `make run` starts them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.redis_server import free_port
from devtools.stack import CONTRACT_PORTS, Stack

StackFactory = Callable[..., Stack]


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
