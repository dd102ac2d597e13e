"""Every dashboard panel and alert rule held to a real Prometheus scraping the whole stack after real trading.

The stack runs on the accelerated simulator until the executor has bought and exited at least once; then each
panel's expressions, each rule and the design note's queries are asked of Prometheus's HTTP API.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import yaml

from devtools import dashboard_check
from devtools.prometheus_local import RULES, Prometheus
from devtools.redis_server import delete_prefix, free_port
from devtools.stack import CONTRACT_PORTS, Stack
from tests.unit.test_dashboards import NOTE_QUERIES

pytestmark = pytest.mark.e2e

# A simulated minute a real second; a candle closes every 5 s, a cycle every 2 s; any trigger becomes a proposal
# and a position is held at most 15 s, so a buy and its exit come within a minute; the universe is rebuilt every
# 5 s (from the cached product list) instead of every minute.
TRADING = {
    "UNIVERSE__REFRESH_INTERVAL_S": "5",
    "SIM_SPEED": "60",
    "STRATEGY__CYCLE_INTERVAL_S": "2",
    "STRATEGY__MIN_CONVICTION_TO_PROPOSE": "0",
    "STRATEGY__TIME_STOP_S": "15",
    "UNIVERSE__MAX_PRODUCTS": "40",
}


PANEL_DEADLINE_S = 90


@dataclass
class Live:
    stack: Stack
    prometheus: Prometheus
    started: float
    trades: list[dict[str, object]]
    exposition: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    folder = tmp_path_factory.mktemp("live")
    stack = Stack(
        ports={name: free_port() for name in CONTRACT_PORTS},
        redis_url=redis_url,
        extra_env={"KEY_PREFIX": prefix} | TRADING,
        log_dir=folder / "logs",
    )
    prometheus: Prometheus | None = None
    try:
        stack.start()
        stack.wait_ready()
        prometheus = Prometheus(stack.ports, folder / "prometheus", free_port(), interval="1s")
        prometheus.wait_ready()
        started = time.time()
        trades = trade_until_an_exit(stack)
        time.sleep(5)  # a few more scrapes and rule evaluations after the exit
        live = Live(stack, prometheus, started, trades)
        live.exposition = {name: httpx.get(f"{stack.url(name)}/metrics").text for name in CONTRACT_PORTS}
        yield live
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.stop()
        delete_prefix(redis_url, prefix)


def trade_until_an_exit(stack: Stack, timeout_s: float = 150) -> list[dict[str, object]]:
    """Cycles run on their own; wait for the executor's ledger to hold a buy and a sell."""
    deadline = time.monotonic() + timeout_s
    trades: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        trades = httpx.get(f"{stack.url('executor')}/v1/trades", timeout=5).json()
        if {"BUY", "SELL"} <= {trade["side"] for trade in trades}:
            return trades
        time.sleep(1)
    pnl = httpx.get(f"{stack.url('executor')}/v1/pnl", timeout=5).json()
    pytest.fail(f"no buy and exit within {timeout_s}s: trades {trades}, pnl {pnl}")


def expressions_of_panels() -> list[tuple[dashboard_check.Target, str]]:
    """(target, the expression as Grafana would send it) for every panel of every dashboard."""
    out = []
    for name, board in dashboard_check.load_dashboards().items():
        values = dashboard_check.variable_values(board)
        out += [
            (target, dashboard_check.substitute(target.expr, values)) for target in dashboard_check.targets(name, board)
        ]
    return out


def series_with_data(live: Live, expr: str) -> tuple[int, int]:
    """(series returned, series with at least one finite value) over the run, at a 1 s step."""
    result = live.prometheus.api("query_range", query=expr, start=str(live.started), end=str(time.time()), step="1")[
        "result"
    ]
    finite = sum(1 for series in result if any(math.isfinite(float(v)) for _, v in series["values"]))
    return len(result), finite


def panel_data(live: Live) -> tuple[list[str], list[str]]:
    """(summary rows, problems) of every panel expression over the run so far."""
    rows, empty = [], []
    for target, expr in expressions_of_panels():
        try:
            count, finite = series_with_data(live, expr)
        except ValueError as error:
            empty.append(f"{target.where}: Prometheus refused {target.expr!r}: {error}")
            continue
        rows.append(f"| {target.dashboard} | {target.panel} | {target.ref} | {count} | {finite} |")
        if finite == 0:
            empty.append(f"{target.where}: no series with data for {target.expr!r} ({count} series, all NaN)")
    return rows, empty


def test_every_dashboard_panel_returns_data_after_a_trade_and_an_exit(live: Live) -> None:
    # A rate or a ratio needs two scrapes with a change between them; on a loaded machine the first trade can
    # come before that, so the stack trades on until every panel has data (or the deadline says which has none).
    deadline = time.monotonic() + PANEL_DEADLINE_S
    rows, empty = panel_data(live)
    while empty and time.monotonic() < deadline:
        time.sleep(2)
        rows, empty = panel_data(live)
    print(f"\nafter {len(live.trades)} trades ({', '.join(str(t['side']) for t in live.trades)}):")
    print("| dashboard | panel | query | series | with data |\n|---|---|---|---:|---:|")
    print("\n".join(rows))
    assert not empty, "\n".join(empty)


def test_the_design_notes_five_queries_return_data(live: Live) -> None:
    for query in NOTE_QUERIES:
        count, finite = series_with_data(live, query)
        assert finite, f"the note's query {query!r} returned {count} series and no data"


def test_every_alert_rule_is_loaded_healthy_and_evaluates(live: Live) -> None:
    committed = {
        rule["alert"]: rule["expr"]
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    loaded = {
        rule["name"]: rule
        for group in live.prometheus.api("rules")["groups"]
        for rule in group["rules"]
        if rule["type"] == "alerting"
    }
    assert set(loaded) == set(committed), f"loaded {sorted(loaded)}, committed {sorted(committed)}"
    print(f"\n{len(loaded)} alert rules loaded:")
    for name, rule in sorted(loaded.items()):
        print(f"  {name}: health {rule['health']}, state {rule['state']}")
        assert rule["health"] == "ok", f"rule {name}: {rule.get('lastError')}"
        live.prometheus.query(committed[name])  # raises, naming the rule's expression, if Prometheus refuses it


def test_every_metric_a_panel_or_rule_names_is_exported_by_a_service(live: Live) -> None:
    exported = set().union(*(dashboard_check.exported_names(text) for text in live.exposition.values()))
    named: dict[str, set[str]] = {}
    for target, expr in expressions_of_panels():
        for metric in dashboard_check.metric_names(expr):
            named.setdefault(metric, set()).add(target.where)
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                for metric in dashboard_check.metric_names(rule["expr"]):
                    named.setdefault(metric, set()).add(f"{path.name} / {rule['alert']}")
    unknown = {
        metric: sorted(where)
        for metric, where in named.items()
        if metric not in exported and metric not in dashboard_check.PROMETHEUS_SERIES
    }
    assert not unknown, f"metrics no service exports: {unknown}"
