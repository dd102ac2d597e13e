"""`make run`: the whole stack without Docker, on the contract's ports, with the Procfile's commands."""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import threading
from urllib.parse import urlsplit

from honcho.manager import Manager

from devtools import prometheus_local
from devtools.redis_server import RedisServer, redis_answers
from devtools.stack import CONTRACT_PORTS, ROOT, process_environment, procfile_commands, stack_environment, wait_ready

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DOCS = {name: f"http://127.0.0.1:{port}" for name, port in CONTRACT_PORTS.items()}
PROMETHEUS_URL = f"http://127.0.0.1:{prometheus_local.PORT}"


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def url_table(redis_url: str, prometheus: bool) -> str:
    """The table printed once every service is ready."""
    rows = [("service", "url", "docs", "metrics")]
    for name, url in DOCS.items():
        rows.append((name, url, f"{url}/docs", f"{url}/metrics"))
    rows.append(("redis", redis_url, "", ""))
    if prometheus:
        rows.append(("prometheus", PROMETHEUS_URL, f"{PROMETHEUS_URL}/alerts", f"{PROMETHEUS_URL}/metrics"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    prometheus = shutil.which("prometheus")
    ports = CONTRACT_PORTS | ({"prometheus": prometheus_local.PORT} if prometheus else {})
    busy = [f"{name} ({port})" for name, port in ports.items() if port_in_use(port)]
    if busy:
        print(f"error: ports already in use: {', '.join(busy)}; stop what holds them first", file=sys.stderr)
        return 1
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    private: RedisServer | None = None
    if redis_answers(redis_url):
        print(f"using the Redis at {redis_url}")
    else:
        port = urlsplit(redis_url).port or 6379
        private = RedisServer(port=port, data_dir=ROOT / ".data" / "redis").start()
        redis_url = private.url
        print(f"started a private Redis ({private.binary.name}, AOF in .data/redis) at {redis_url}")
    base = stack_environment(CONTRACT_PORTS, redis_url=redis_url)
    manager = Manager()
    for name, command in procfile_commands().items():
        manager.add_process(name, command, env=process_environment(base, CONTRACT_PORTS[name]), cwd=str(ROOT))
    if prometheus:
        folder = ROOT / ".data" / "prometheus"
        config = prometheus_local.write_config(CONTRACT_PORTS, folder)
        line = prometheus_local.command(prometheus, config, folder / "tsdb", prometheus_local.PORT)
        manager.add_process("prometheus", shlex.join(line), cwd=str(ROOT))
    else:
        print(prometheus_local.HOW_TO_GET)

    def announce() -> None:
        status = wait_ready(DOCS, timeout_s=90)
        failing = [name for name, code in status.items() if code != 200]
        if failing:
            print(f"\nnot ready after 90s: {', '.join(failing)} (see their log lines above)\n", flush=True)
        else:
            table = url_table(redis_url, bool(prometheus))
            print(f"\nall services ready\n\n{table}\n\nCtrl-C stops them.\n", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        manager.loop()
    finally:
        if private is not None:
            private.stop()
    return manager.returncode or 0


if __name__ == "__main__":
    sys.exit(main())
