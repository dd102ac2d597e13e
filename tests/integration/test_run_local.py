"""`make run`'s runner as a real process on free ports: a killed service comes back, Ctrl-C stops everything."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.redis_server import free_port
from devtools.run_local import PORTS
from devtools.stack import CONTRACT_PORTS, ROOT

pytestmark = pytest.mark.integration

STARTED = re.compile(r"\| (\w+) started \(pid=(\d+)\)")


class Runner:
    """`devtools.run_local.main(ports, data_dir)` in a child process, its output lines collected as they come."""

    def __init__(self, ports: dict[str, int], data_dir: Path, env: dict[str, str]):
        code = (
            "import sys; from pathlib import Path; from devtools.run_local import main; "
            f"sys.exit(main({ports!r}, Path({str(data_dir)!r})))"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=os.environ | env | {"PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, start: int = 0, timeout_s: float = 30.0) -> tuple[int, re.Match[str]]:
        """The index and match of the first line from `start` on that matches."""
        deadline = time.monotonic() + timeout_s
        index = start
        while time.monotonic() < deadline:
            while index < len(self.lines):
                match = re.search(pattern, self.lines[index])
                if match:
                    return index, match
                index += 1
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s}s; output:\n" + "\n".join(self.lines))

    def started(self) -> list[tuple[str, int]]:
        return [(m[1], int(m[2])) for line in list(self.lines) if (m := STARTED.search(line))]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def readyz(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2.0).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
def runner(tmp_path: Path, redis_url: str, key_prefix: str) -> Iterator[tuple[Runner, dict[str, int]]]:
    ports = {name: free_port() for name in PORTS}
    runner = Runner(ports, tmp_path / "data", {"REDIS_URL": redis_url, "KEY_PREFIX": key_prefix})
    try:
        yield runner, ports
    finally:
        runner.close()
        for _, pid in runner.started():  # only after a failure: a passing test has seen them all gone
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def test_a_killed_service_is_restarted_and_ctrl_c_stops_everything(runner: tuple[Runner, dict[str, int]]) -> None:
    run, ports = runner
    ready, _ = run.wait_for(r"^all services ready$", timeout_s=60)
    first = dict(run.started())
    assert set(CONTRACT_PORTS) <= set(first)
    assert all(readyz(ports[name]) == 200 for name in CONTRACT_PORTS)

    os.kill(first["executor"], signal.SIGKILL)
    exited, _ = run.wait_for(
        r"\| executor exited with signal SIGKILL after \d+\.\d s; restarting in 1 s \(restart 1\)$", ready
    )
    _, match = run.wait_for(r"\| executor started \(pid=(\d+)\)", exited, timeout_s=10)
    restarted = int(match[1])
    assert restarted != first["executor"] and not alive(first["executor"])
    deadline = time.monotonic() + 30
    while readyz(ports["executor"]) != 200:
        assert time.monotonic() < deadline, "the restarted executor never answered /readyz 200"
        time.sleep(0.1)

    others = {name: pid for name, pid in first.items() if name != "executor"}
    assert dict(run.started()) == others | {"executor": restarted}
    assert len(run.started()) == len(first) + 1
    assert all(alive(pid) for pid in others.values())
    assert all(readyz(ports[name]) == 200 for name in CONTRACT_PORTS)

    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=20) in (0, 130)
    left = [pid for _, pid in run.started() if alive(pid)]
    assert left == [], f"still running after the runner exited: {left}"
