"""Starts the five services as the Procfile says, with the contract's environment; shared by runner and tests."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx
from honcho.environ import parse_procfile

from devtools.process import stop_process

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile"

# The Platform contract's ports, in start order.
CONTRACT_PORTS: dict[str, int] = {
    "ratelimit": 8001,
    "universe": 8002,
    "strategy": 8003,
    "executor": 8004,
    "exchange_sim": 8010,
}
URL_VARS = {
    "ratelimit": "RATELIMIT_URL",
    "universe": "UNIVERSE_URL",
    "strategy": "STRATEGY_URL",
    "executor": "EXECUTOR_URL",
    "exchange_sim": "EXCHANGE_API_URL",
}


def procfile_commands(path: Path = PROCFILE) -> dict[str, str]:
    """Service name -> command line, as written in the Procfile (the containers' commands)."""
    return dict(parse_procfile(path.read_text()).processes)


def stack_environment(ports: dict[str, int], *, redis_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every service gets: the other services' URLs on 127.0.0.1, Redis, config."""
    env = {var: f"http://127.0.0.1:{ports[name]}" for name, var in URL_VARS.items()}
    env["REDIS_URL"] = redis_url
    env.setdefault("CONFIG_DIR", str(ROOT / "config"))
    env |= extra or {}
    return env


def process_environment(base: dict[str, str], port: int) -> dict[str, str]:
    """os.environ plus the stack environment and this service's PORT, with the venv's python first on PATH."""
    venv_bin = str(Path(sys.executable).parent)
    env = dict(os.environ) | base | {"PORT": str(port), "PYTHONUNBUFFERED": "1"}
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def wait_ready(urls: dict[str, str], timeout_s: float = 60.0) -> dict[str, int]:
    """Poll each base URL's /readyz until all answer 200; returns the last status per service."""
    deadline = time.monotonic() + timeout_s
    status = {name: 0 for name in urls}
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            for name, url in urls.items():
                if status[name] == 200:
                    continue
                try:
                    status[name] = client.get(f"{url}/readyz").status_code
                except httpx.HTTPError:
                    status[name] = 0
            if all(code == 200 for code in status.values()):
                return status
            time.sleep(0.1)
    return status


@dataclass
class Stack:
    """The five services as child processes, one per Procfile line."""

    ports: dict[str, int]
    redis_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _logs: list[BinaryIO] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self, names: list[str] | None = None) -> Stack:
        base = stack_environment(self.ports, redis_url=self.redis_url, extra=self.extra_env)
        for name, command in procfile_commands().items():
            if names is not None and name not in names:
                continue
            out: BinaryIO | int = subprocess.DEVNULL
            if self.log_dir is not None:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = (self.log_dir / f"{name}.log").open("ab")
                self._logs.append(out)
            self.processes[name] = subprocess.Popen(
                shlex.split(command),
                cwd=ROOT,
                env=process_environment(base, self.ports[name]),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        status = wait_ready({name: self.url(name) for name in self.processes}, timeout_s)
        not_ready = {name: code for name, code in status.items() if code != 200}
        if not_ready:
            dead = {n: p.returncode for n, p in self.processes.items() if p.poll() is not None}
            raise RuntimeError(f"services not ready after {timeout_s}s: {not_ready}; exited: {dead}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            stop_process(process, timeout_s=15)
        self.processes.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
