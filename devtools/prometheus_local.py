"""A real Prometheus beside the local stack: the committed config and rules, pointed at local ports.

`make run` and the end-to-end tests start it the same way, so what they scrape is what compose scrapes.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from devtools.process import stop_process
from devtools.stack import ROOT

CONFIG = ROOT / "prometheus" / "prometheus.yml"
RULES = ROOT / "prometheus" / "rules"
PORT = 9090
HOW_TO_GET = "no prometheus on PATH: apt-get install prometheus (or brew install prometheus) and make run starts it"


def local_config(ports: dict[str, int], *, interval: str | None = None) -> dict[str, Any]:
    """The committed config with compose hostnames replaced by local ports and the rules read from the checkout."""
    config = yaml.safe_load(CONFIG.read_text())
    if interval:
        config["global"] |= {"scrape_interval": interval, "evaluation_interval": interval}
    config["rule_files"] = [str(RULES / Path(pattern).name) for pattern in config.get("rule_files", [])]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [f"127.0.0.1:{ports[job['job_name']]}"]}]
    return config


def command(binary: str, config_path: Path, data_dir: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config_path}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]


def write_config(ports: dict[str, int], folder: Path, *, interval: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(local_config(ports, interval=interval), sort_keys=False))
    return path


class Prometheus:
    """A Prometheus child process and its HTTP API."""

    def __init__(self, ports: dict[str, int], folder: Path, port: int, *, interval: str | None = None):
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError(HOW_TO_GET)
        self.url = f"http://127.0.0.1:{port}"
        config = write_config(ports, folder, interval=interval)
        self.log = (folder / "prometheus.log").open("ab")
        self.process = subprocess.Popen(
            command(binary, config, folder / "tsdb", port), stdout=self.log, stderr=subprocess.STDOUT
        )
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}")
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout_s}s")

    def api(self, path: str, **params: str) -> Any:
        response = self.http.get(f"/api/v1/{path}", params=params)
        body = response.json()
        if body.get("status") != "success":
            raise ValueError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        return self.api("query", query=promql)["result"]

    def stop(self) -> None:
        self.http.close()
        stop_process(self.process)
        self.log.close()
