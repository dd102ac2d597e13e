"""The whole stack scraped by a real Prometheus, with the committed scrape config pointed at local ports."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from devtools.prometheus_local import Prometheus
from devtools.redis_server import free_port
from devtools.stack import CONTRACT_PORTS, ROOT
from shared.settings import DEV_API_TOKEN
from tests.conftest import StackFactory

pytestmark = pytest.mark.e2e

PROMETHEUS_CONFIG = ROOT / "prometheus" / "prometheus.yml"


def binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} not found: install Debian's prometheus package (.ci/run does)"
    return found


def test_committed_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert jobs == set(CONTRACT_PORTS)


def test_prometheus_scrapes_every_service(redis_url: str, start_stack: StackFactory, tmp_path: Path) -> None:
    stack = start_stack(redis_url)
    prometheus = Prometheus(stack.ports, tmp_path / "prometheus", free_port(), interval="1s")
    try:
        prometheus.wait_ready()
        grant = httpx.post(
            f"{stack.url('ratelimit')}/v1/acquire",
            json={"endpoint": "create_order", "max_wait_ms": 2000},  # the running stack draws on the pool too
            headers={"Authorization": f"Bearer {DEV_API_TOKEN}"},
        )
        assert grant.status_code == 200
        deadline = time.monotonic() + 60
        up: dict[str, str] = {}
        while time.monotonic() < deadline:
            up = {r["metric"]["job"]: r["value"][1] for r in prometheus.query("up")}
            if len(up) == len(CONTRACT_PORTS) and all(v == "1" for v in up.values()):
                break
            time.sleep(0.5)
        assert up == dict.fromkeys(CONTRACT_PORTS, "1")
        services = {r["metric"]["service"] for r in prometheus.query("trader_service_info")}
        assert services == set(CONTRACT_PORTS)
        query = 'max(trader_rate_limiter_utilization_pct{endpoint="create_order"}) by (endpoint)'
        utilization = prometheus.query(query)
        assert utilization and float(utilization[0]["value"][1]) > 0
    finally:
        prometheus.stop()


RULES = ROOT / "prometheus" / "rules"
RULE_TESTS = ROOT / "tests" / "prometheus"


def test_the_alert_rules_are_valid_and_each_fires_and_stays_quiet_in_its_own_unit_test() -> None:
    rule_files = sorted(RULES.glob("*.yml"))
    assert rule_files, "no rule files"
    checked = subprocess.run(
        [binary("promtool"), "check", "rules", *map(str, rule_files)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [binary("promtool"), "test", "rules", *map(str, sorted(RULE_TESTS.glob("*_test.yml")))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {rule["alert"] for f in rule_files for g in yaml.safe_load(f.read_text())["groups"] for rule in g["rules"]}
    exercised = {
        case["alertname"]
        for f in RULE_TESTS.glob("*_test.yml")
        for test in yaml.safe_load(f.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts == exercised, f"alerts without a unit test: {sorted(alerts - exercised)}"
    for f in rule_files:
        for group in yaml.safe_load(f.read_text())["groups"]:
            for rule in group["rules"]:
                assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
                assert "for" in rule and rule["annotations"]["summary"] and rule["annotations"]["description"]
