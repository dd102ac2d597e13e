"""The ratelimit service as child processes for the benchmark: config, start, readiness, RSS, stop."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import orjson

from devtools.process import stop_process
from devtools.redis_server import free_port
from devtools.stack import ROOT, process_environment, wait_ready
from services.ratelimit.settings import RatelimitSettings
from shared.ratelimits import RateLimitConfig
from shared.settings import load_settings

ENDPOINT = "get_candles"
# One pool so large that nothing is ever denied: the benchmark measures the decision, not the limit.
CONFIG_YAML = f"""\
ratelimit:
  pools:
    bench: {{rate: 1000000, burst: 1000000}}
  endpoints:
    {ENDPOINT}: {{priority: critical, pools: {{bench: 1}}}}
"""
LOG_MARKERS = (b'"level":"warning"', b'"level":"error"', b'"level":"critical"', b"Traceback")


def write_config(directory: Path) -> Path:
    """A CONFIG_DIR holding the benchmark's ratelimits.yaml."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ratelimits.yaml").write_text(CONFIG_YAML)
    return directory


def load_config(config_dir: Path) -> RateLimitConfig:
    """The RateLimitConfig the service will read from config_dir."""
    return load_settings(RatelimitSettings, config_dir=config_dir).ratelimit


@dataclass
class ServiceProcess:
    """One `python -m services.<service>` child on a free port, logging to a file."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    _log: BinaryIO

    @classmethod
    def start(
        cls,
        name: str,
        *,
        config_dir: Path,
        redis_url: str,
        key_prefix: str,
        token: str,
        log_dir: Path,
        service: str = "ratelimit",
        extra_env: dict[str, str] | None = None,
    ) -> ServiceProcess:
        """Spawn the service with the Platform contract's environment."""
        port = free_port()
        env = process_environment(
            {
                "REDIS_URL": redis_url,
                "KEY_PREFIX": key_prefix,
                "CONFIG_DIR": str(config_dir),
                "TRADER_API_TOKEN": token,
                "TRADING_MODE": "sim",
                "BIND_HOST": "127.0.0.1",
                "LOG_LEVEL": "WARNING",
            }
            | (extra_env or {}),
            port,
        )
        log_path = log_dir / f"{name}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        return cls(name, port, log_path, process, log)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mib(self) -> float | None:
        """Resident set size (VmRSS) of the process in MiB, or None once it has exited."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return None

    def log_problems(self, limit: int = 5) -> list[str]:
        """The first warning, error or traceback lines the service logged."""
        self._log.flush()
        lines = self.log_path.read_bytes().splitlines()
        found = [line for line in lines if any(marker in line.replace(b" ", b"") for marker in LOG_MARKERS)]
        return [shorten(line) for line in found[:limit]] + (
            [f"... {len(found) - limit} more"] if len(found) > limit else []
        )

    def stop(self) -> None:
        """Terminate (kill after 10 s) and close the log."""
        stop_process(self.process)
        self._log.close()


def shorten(line: bytes) -> str:
    """A log line as text: the message of a JSON line, else the raw line, cut to 200 characters."""
    try:
        entry = orjson.loads(line)
        text = f"{entry.get('level')}: {entry.get('message')}"
    except orjson.JSONDecodeError:
        text = line.decode(errors="replace")
    return text[:200]


async def wait_all_ready(services: list[ServiceProcess], timeout_s: float = 30.0) -> None:
    """Wait until every service's /readyz answers 200, or raise with the log of the ones that did not."""
    status = await asyncio.to_thread(wait_ready, {s.name: s.url for s in services}, timeout_s)
    failed = [s for s in services if status[s.name] != 200]
    if failed:
        details = "; ".join(
            f"{s.name} (readyz {status[s.name]}, exit {s.process.poll()}): {s.log_path.read_text()[-500:]}"
            for s in failed
        )
        raise RuntimeError(f"service not ready after {timeout_s}s: {details}")
