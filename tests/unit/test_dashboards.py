"""The committed dashboards, checked without Grafana: its schema, layout, datasources, units and PromQL."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from devtools import dashboard_check
from devtools.dashboard_check import DASHBOARDS, offline_problems

# The design note's dashboard queries, to appear verbatim in the Trader overview.
NOTE_QUERIES = (
    "rate(trader_trades_total[1h])",
    "trader_triggers_to_proposals_ratio",
    "max(trader_rate_limiter_utilization_pct) by (endpoint)",
    "trader_triggers_detected",
    "trader_proposals_generated",
)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool not found: install Debian's prometheus package (.ci/run does)"
    return found


def test_every_committed_dashboard_passes_every_offline_check(promtool: str) -> None:
    assert {path.name for path in DASHBOARDS.glob("*.json")} == {"trader-overview.json", "services.json"}
    problems = offline_problems(promtool)
    assert not problems, "\n".join(problems)


def test_the_overview_holds_the_design_notes_queries_verbatim() -> None:
    overview = dashboard_check.load_dashboards()["trader-overview.json"]
    exprs = {target.expr for target in dashboard_check.targets("trader-overview.json", overview)}
    missing = [query for query in NOTE_QUERIES if query not in exprs]
    assert not missing, f"Trader overview lacks the note's queries {missing}"


def test_the_schema_is_the_one_of_the_grafana_image_compose_runs() -> None:
    version = dashboard_check.grafana_version()
    schema = json.loads((dashboard_check.SCHEMAS / f"dashboard-{version}.schema.json").read_text())
    assert f"@grafana/schema {version}" in schema["$comment"]


BROKEN = {
    "a graph panel (removed in Grafana 12)": (
        lambda d: d["panels"][1].update(type="graph"),
        "schema: at panels/1/type",
    ),
    "an unknown legend option": (
        lambda d: d["panels"][2]["options"]["legend"].update(foo=1),
        "schema: at panels/2/options/legend",
    ),
    "a panel past the grid's edge": (
        lambda d: d["panels"][1]["gridPos"].update(x=22),
        "is outside the 24-column grid",
    ),
    "two panels on the same cells": (
        lambda d: d["panels"][2]["gridPos"].update(x=0),
        "overlaps 'Trades in the last hour'",
    ),
    "a repeated panel id": (lambda d: d["panels"][2].update(id=2), "id 2 is also the id of"),
    "an unknown datasource uid": (
        lambda d: d["panels"][2]["targets"][0]["datasource"].update(uid="elsewhere"),
        "datasource uid 'elsewhere' is not provisioned",
    ),
    "an undefined variable": (
        lambda d: d["panels"][2]["targets"][0].update(expr="trader_trades_per_hour{job=~'$nowhere'}"),
        "variable $nowhere is not defined",
    ),
    "a unit Grafana lacks": (
        lambda d: d["panels"][2]["fieldConfig"]["defaults"].update(unit="trades"),
        "unit 'trades' is not one of Grafana's units",
    ),
    "an expression that does not parse": (
        lambda d: d["panels"][2]["targets"][0].update(expr="sum(rate(trader_trades_total[1h]) by"),
        "promtool: could not parse expression",
    ),
    "a dashboard id that is not null": (lambda d: d.update(id=7), "id must be null"),
}


@pytest.mark.parametrize("change", list(BROKEN))
def test_each_kind_of_mistake_is_named_with_its_dashboard_and_panel(change: str, promtool: str, tmp_path: Path) -> None:
    board = copy.deepcopy(dashboard_check.load_dashboards()["trader-overview.json"])
    mutate, expected = BROKEN[change]
    mutate(board)
    (tmp_path / "trader-overview.json").write_text(json.dumps(board))
    problems = offline_problems(promtool, tmp_path)
    assert any(expected in problem and problem.startswith("trader-overview.json") for problem in problems), problems
    assert all("services.json" not in problem for problem in problems)
