"""`make run`: the whole stack without Docker, on the contract's ports, with the Procfile's commands.

A service that exits is started again after a backoff (devtools/supervise.py), as compose's `restart:
unless-stopped` does; Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from devtools import prometheus_local
from devtools.redis_server import RedisServer, redis_answers
from devtools.stack import CONTRACT_PORTS, ROOT, process_environment, procfile_commands, stack_environment, wait_ready
from devtools.supervise import Supervisor

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The contract's ports and Prometheus's; the tests pass free ones instead.
PORTS = CONTRACT_PORTS | {"prometheus": prometheus_local.PORT}


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def url_table(urls: dict[str, str], redis_url: str, prometheus_url: str | None) -> str:
    """The table printed once every service is ready."""
    rows = [("service", "url", "docs", "metrics")]
    for name, url in urls.items():
        rows.append((name, url, f"{url}/docs", f"{url}/metrics"))
    rows.append(("redis", redis_url, "", ""))
    if prometheus_url:
        rows.append(("prometheus", prometheus_url, f"{prometheus_url}/alerts", f"{prometheus_url}/metrics"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(ports: dict[str, int] = PORTS, data_dir: Path = ROOT / ".data") -> int:
    """Run the stack on `ports` (a port per service, and Prometheus's) until SIGINT, SIGTERM or SIGHUP."""
    prometheus = shutil.which("prometheus")
    service_ports = {name: ports[name] for name in CONTRACT_PORTS}
    watched = service_ports | ({"prometheus": ports["prometheus"]} if prometheus else {})
    busy = [f"{name} ({port})" for name, port in watched.items() if port_in_use(port)]
    if busy:
        print(f"error: ports already in use: {', '.join(busy)}; stop what holds them first", file=sys.stderr)
        return 1
    redis_url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    private: RedisServer | None = None
    if redis_answers(redis_url):
        print(f"using the Redis at {redis_url}")
    else:
        port = urlsplit(redis_url).port or 6379
        private = RedisServer(port=port, data_dir=data_dir / "redis").start()
        redis_url = private.url
        print(f"started a private Redis ({private.binary.name}, AOF in {data_dir / 'redis'}) at {redis_url}")
    base = stack_environment(service_ports, redis_url=redis_url)
    supervisor = Supervisor(cwd=ROOT)
    for name, command in procfile_commands().items():
        supervisor.add(name, shlex.split(command), env=process_environment(base, service_ports[name]))
    prometheus_url = None
    if prometheus:
        folder = data_dir / "prometheus"
        config = prometheus_local.write_config(service_ports, folder)
        supervisor.add("prometheus", prometheus_local.command(prometheus, config, folder / "tsdb", ports["prometheus"]))
        prometheus_url = f"http://127.0.0.1:{ports['prometheus']}"
    else:
        print(prometheus_local.HOW_TO_GET)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in service_ports.items()}

    def announce() -> None:
        status = wait_ready(urls, timeout_s=90)
        failing = [name for name, code in status.items() if code != 200]
        if failing:
            print(f"\nnot ready after 90s: {', '.join(failing)} (see their log lines above)\n", flush=True)
        else:
            table = url_table(urls, redis_url, prometheus_url)
            print(f"\nall services ready\n\n{table}\n\nCtrl-C stops them.\n", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        return supervisor.run()
    finally:
        if private is not None:
            private.stop()


if __name__ == "__main__":
    sys.exit(main())
