"""Checks of the committed Grafana dashboards that need no Grafana: schema, layout, datasources, PromQL, metrics.

Every problem is one line naming the dashboard, the panel and what is wrong.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import promql_parser
import yaml

from devtools.stack import ROOT

DASHBOARDS = ROOT / "grafana" / "dashboards"
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources"
SCHEMAS = ROOT / "devtools" / "grafana_schema"
# Grafana's built-in variables, replaced by a literal of the right kind before parsing.
BUILTIN_VARIABLES = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}
# Series Prometheus itself makes: not exported by a service.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+)|\[\[(\w+)\]\])")


@dataclass(frozen=True, slots=True)
class Target:
    dashboard: str
    panel: str
    ref: str
    expr: str

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref}"


def grafana_version(compose: Path = ROOT / "docker-compose.yml") -> str:
    """The version in compose's `grafana/grafana:` tag: the schema and units must be of the same release."""
    image = yaml.safe_load(compose.read_text())["services"]["grafana"]["image"]
    return image.rsplit(":", 1)[1]


def load_dashboards(folder: Path = DASHBOARDS) -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def datasources(folder: Path = DATASOURCES) -> dict[str, str]:
    """uid → type of every provisioned datasource."""
    found: dict[str, str] = {}
    for path in sorted(folder.glob("*.y*ml")):
        for source in yaml.safe_load(path.read_text()).get("datasources", []):
            found[source["uid"]] = source["type"]
    return found


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' collapsed children included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def targets(name: str, dashboard: dict[str, Any]) -> list[Target]:
    return [
        Target(name, panel.get("title", f"panel {panel.get('id')}"), target.get("refId", "?"), target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def variable_values(dashboard: dict[str, Any]) -> dict[str, str]:
    """What each variable stands for when checking: its 'All' value, else a literal."""
    values = dict(BUILTIN_VARIABLES)
    for variable in dashboard.get("templating", {}).get("list", []):
        values[variable["name"]] = "5m" if variable.get("type") == "interval" else variable.get("allValue") or "x"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        return values.get(name, match.group(0))

    return VARIABLE.sub(one, expr)


def metric_names(expr: str) -> set[str]:
    """Metric names the expression selects (by name or by a `__name__` equality matcher)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            names.update(m.value for m in node.matchers.matchers if m.name == "__name__" and m.op == "=")

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def exported_names(exposition: str) -> set[str]:
    """Series names a /metrics page can carry, from its TYPE lines (a family is listed even before its first sample)."""
    suffixes = {"histogram": ("_bucket", "_count", "_sum"), "summary": ("", "_count", "_sum")}
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.update(name + suffix for suffix in suffixes.get(kind, ("",)))
    return names


def schema_problems(name: str, dashboard: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(dashboard), key=lambda e: list(map(str, e.absolute_path))):
        path = list(error.absolute_path)
        where = name
        if len(path) >= 2 and path[0] == "panels" and isinstance(path[1], int):
            where += f" / {dashboard['panels'][path[1]].get('title', path[1])}"
        location = "/".join(map(str, path)) or "(top)"
        problems.append(f"{where}: schema: at {location}: {error.message[:300]}")
    return problems


def layout_problems(name: str, dashboard: dict[str, Any]) -> list[str]:
    problems = []
    seen: dict[int, str] = {}
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        title = panel.get("title", "?")
        pid = panel.get("id")
        if not isinstance(pid, int):
            problems.append(f"{name} / {title}: id {pid!r} is not an integer")
        elif pid in seen:
            problems.append(f"{name} / {title}: id {pid} is also the id of {seen[pid]!r}")
        else:
            seen[pid] = title
        pos = panel.get("gridPos", {})
        x, y, w, h = (pos.get(k) for k in ("x", "y", "w", "h"))
        if not all(isinstance(v, int) for v in (x, y, w, h)):
            problems.append(f"{name} / {title}: gridPos {pos} needs integer x, y, w and h")
            continue
        if w < 1 or h < 1 or x < 0 or y < 0 or x + w > 24:
            problems.append(f"{name} / {title}: gridPos {pos} is outside the 24-column grid")
            continue
        for cell in ((cx, cy) for cx in range(x, x + w) for cy in range(y, y + h)):
            if cell in cells:
                problems.append(f"{name} / {title}: gridPos {pos} overlaps {cells[cell]!r}")
                break
            cells[cell] = title
    return problems


def datasource_problems(name: str, dashboard: dict[str, Any], provisioned: dict[str, str]) -> list[str]:
    problems = []

    def check(where: str, source: Any) -> None:
        if source is None or (isinstance(source, dict) and source.get("type") == "grafana"):
            return
        if not isinstance(source, dict) or "uid" not in source:
            problems.append(f"{where}: datasource {source!r} is not by uid")
        elif source["uid"] not in provisioned:
            problems.append(f"{where}: datasource uid {source['uid']!r} is not provisioned ({sorted(provisioned)})")
        elif source.get("type") != provisioned[source["uid"]]:
            problems.append(
                f"{where}: datasource {source['uid']!r} has type {source.get('type')!r}, "
                f"provisioned as {provisioned[source['uid']]!r}"
            )

    for panel in panels(dashboard):
        where = f"{name} / {panel.get('title', '?')}"
        if panel.get("type") != "row":
            check(where, panel.get("datasource"))
            if panel.get("datasource") is None:
                problems.append(f"{where}: no datasource")
        for target in panel.get("targets", []):
            check(f"{where} / {target.get('refId', '?')}", target.get("datasource"))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            check(f"{name} / variable {variable.get('name')}", variable.get("datasource"))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        check(f"{name} / annotation {annotation.get('name')}", annotation.get("datasource"))
    return problems


def variable_and_unit_problems(name: str, dashboard: dict[str, Any], units: set[str]) -> list[str]:
    problems = []
    known = variable_values(dashboard)
    for target in targets(name, dashboard):
        for match in VARIABLE.finditer(target.expr):
            variable = next(group for group in match.groups() if group)
            if variable not in known:
                problems.append(f"{target.where}: variable ${variable} is not defined in templating")
    for panel in panels(dashboard):
        if panel.get("type") == "row":
            continue
        where = f"{name} / {panel.get('title', '?')}"
        field = panel.get("fieldConfig", {})
        unit = field.get("defaults", {}).get("unit")
        if unit is None:
            problems.append(f"{where}: no unit in fieldConfig.defaults")
        elif unit not in units:
            problems.append(f"{where}: unit {unit!r} is not one of Grafana's units")
        if not field.get("defaults", {}).get("thresholds", {}).get("steps"):
            problems.append(f"{where}: no thresholds in fieldConfig.defaults")
        for override in field.get("overrides", []):
            for prop in override.get("properties", []):
                if prop.get("id") == "unit" and prop.get("value") not in units:
                    problems.append(f"{where}: override unit {prop.get('value')!r} is not one of Grafana's units")
        if not panel.get("targets"):
            problems.append(f"{where}: no query")
    return problems


def uid_problems(boards: dict[str, dict[str, Any]]) -> list[str]:
    problems = []
    owners: dict[str, str] = {}
    for name, dashboard in boards.items():
        uid = dashboard.get("uid")
        if not isinstance(uid, str) or not 1 <= len(uid) <= 40:
            problems.append(f"{name}: uid {uid!r} must be a string of 1 to 40 characters")
        elif uid in owners:
            problems.append(f"{name}: uid {uid!r} is also the uid of {owners[uid]}")
        else:
            owners[uid] = name
        if dashboard.get("id") is not None:
            problems.append(f"{name}: id must be null (Grafana assigns it), not {dashboard.get('id')!r}")
    return problems


def promql_problems(all_targets: list[tuple[Target, str]], promtool: str) -> list[str]:
    """Each (target, substituted expression) must parse with promql-parser and with promtool."""
    problems = []
    for target, expr in all_targets:
        try:
            promql_parser.parse(expr)
        except Exception as error:  # the parser raises a bare exception type of its own
            problems.append(f"{target.where}: promql-parser cannot parse {target.expr!r}: {error}")
    groups = [
        {"name": f"check {i}", "rules": [{"record": f"check:expr_{i}", "expr": expr}]}
        for i, (_, expr) in enumerate(all_targets)
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as rules:
        yaml.safe_dump({"groups": groups}, rules)
        rules.flush()
        result = subprocess.run([promtool, "check", "rules", rules.name], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = result.stdout + result.stderr
        failed = 0
        for line in output.splitlines():
            found = re.search(r'group "check (\d+)", rule \d+, "[^"]*": (.*)', line)
            if found:
                target = all_targets[int(found.group(1))][0]
                problems.append(f"{target.where}: promtool: {found.group(2)} in {target.expr!r}")
                failed += 1
        if not failed:
            problems.append(f"promtool check rules failed: {output.strip()[:500]}")
    return problems


def offline_problems(promtool: str, folder: Path = DASHBOARDS) -> list[str]:
    """Everything checkable without a running Prometheus, for every committed dashboard."""
    version = grafana_version()
    schema = json.loads((SCHEMAS / f"dashboard-{version}.schema.json").read_text())
    units = {line for line in (SCHEMAS / f"units-{version}.txt").read_text().splitlines() if not line.startswith("#")}
    provisioned = datasources()
    boards = load_dashboards(folder)
    problems = uid_problems(boards)
    parsed: list[tuple[Target, str]] = []
    for name, dashboard in boards.items():
        problems += schema_problems(name, dashboard, schema)
        problems += layout_problems(name, dashboard)
        problems += datasource_problems(name, dashboard, provisioned)
        problems += variable_and_unit_problems(name, dashboard, units)
        values = variable_values(dashboard)
        parsed += [(target, substitute(target.expr, values)) for target in targets(name, dashboard)]
    return problems + promql_problems(parsed, promtool)
