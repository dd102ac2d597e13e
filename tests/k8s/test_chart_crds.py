"""The chart's ServiceMonitors and PrometheusRules are valid against the Prometheus operator's v1 schema, read
strictly: a field the schema does not list fails, as `kubectl apply --validate=strict` would refuse it.

The schemas are generated from the pinned npm package @kubernetes-models/prometheus-operator and committed
(devtools/prometheus_operator_schema/), so nothing here needs node or a cluster.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from functools import cache
from typing import Any

import jsonschema
import pytest
from jsonschema.exceptions import ValidationError

from tests.k8s.test_chart import CHART, CRD_API, ROOT, by_kind, render

pytestmark = pytest.mark.integration

SCHEMAS = ROOT / "devtools" / "prometheus_operator_schema"
PACKAGE = "@kubernetes-models/prometheus-operator"
KINDS = ("ServiceMonitor", "PrometheusRule")
# Discovered, not listed: a new ci/<name>-values.yaml is checked without touching this file.
SCENARIOS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
# Schema keywords whose values are schemas, a list of schemas or a map of them.
ONE, LISTS, MAPS = {"items", "additionalProperties", "not"}, {"allOf", "anyOf", "oneOf"}, {"properties", "$defs"}
_DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
_LABEL_NAME = "[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
# What the API server checks in every object's metadata beyond types (apimachinery's ValidateObjectMeta).
METADATA = {
    "properties": {
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"maxLength": 253, "pattern": f"^{_DNS_SUBDOMAIN}$"},
                "namespace": {"maxLength": 63, "pattern": f"^{_DNS_LABEL}$"},
                "labels": {
                    "propertyNames": {"pattern": f"^({_DNS_SUBDOMAIN}/)?(?=[^/]{{1,63}}$){_LABEL_NAME}$"},
                    "additionalProperties": {
                        "maxLength": 63,
                        "pattern": f"^({_LABEL_NAME})?$",
                    },
                },
            },
        }
    },
}


def schema(kind: str) -> dict[str, Any]:
    """The committed schema of one kind, as generated (open to unknown fields)."""
    return json.loads((SCHEMAS / f"{kind.lower()}-v1.schema.json").read_text())


def closed(node: dict[str, Any]) -> dict[str, Any]:
    """The schema with every object that lists its properties refusing any other field."""
    out = dict(node)
    for key, value in node.items():
        if key in MAPS:
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key in LISTS:
            out[key] = [closed(sub) for sub in value]
        elif key in ONE and isinstance(value, dict):
            out[key] = closed(value)
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


@cache
def validators(kind: str) -> tuple[jsonschema.protocols.Validator, ...]:
    """The kind's closed schema and the metadata rules, each as a validator."""
    loaded = schema(kind)
    jsonschema.Draft202012Validator.check_schema(loaded)
    return jsonschema.Draft202012Validator(closed(loaded)), jsonschema.Draft202012Validator(METADATA)


def leaves(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """The errors that say what is wrong: inside anyOf/oneOf, the failing branches' own errors."""
    for error in errors:
        # A nullable field is anyOf [null, its type]; "is not of type 'null'" says nothing.
        inner = [e for e in error.context or () if not (e.validator == "type" and e.validator_value == "null")]
        yield from leaves(inner) if inner else (error,)


def problems(doc: dict[str, Any]) -> list[str]:
    """Each refusal of one object as `<kind>/<name>: <path>: <message>`."""
    name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    found = [e for validator in validators(doc["kind"]) for e in leaves(validator.iter_errors(doc))]
    return [f"{name}: {'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in found]


@pytest.fixture(scope="module")
def with_operator() -> list[dict[str, Any]]:
    return render("sim", "--api-versions", CRD_API)


# --- the schema files ------------------------------------------------------------------------------------------


def test_schema_files_are_from_the_pinned_package() -> None:
    pin = json.loads((SCHEMAS / "package.json").read_text())["devDependencies"][PACKAGE]
    lock = json.loads((SCHEMAS / "package-lock.json").read_text())["packages"][f"node_modules/{PACKAGE}"]["version"]
    assert pin == lock, f"package.json pins {pin}, package-lock.json has {lock}: run npm install there"
    for kind in KINDS:
        loaded = schema(kind)
        recorded = loaded["x-generated-from"]
        assert recorded == {"package": PACKAGE, "version": pin}, (
            f"{kind.lower()}-v1.schema.json is from {recorded}, the pin is {pin}: run {SCHEMAS.name}/generate.sh"
        )
        jsonschema.Draft202012Validator.check_schema(loaded)


# --- every rendered object -------------------------------------------------------------------------------------


def test_ci_scenarios_are_found() -> None:
    assert SCENARIOS, f"no {CHART}/ci/*-values.yaml"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_operator_object_is_valid_against_the_crd_schema(scenario: str) -> None:
    docs = [d for d in render(scenario, "--api-versions", CRD_API) if d.get("apiVersion") == CRD_API]
    counts = Counter(d["kind"] for d in docs)
    assert counts, f"{scenario}: nothing of {CRD_API} rendered, so nothing was checked"
    assert set(counts) <= set(KINDS), f"{scenario}: no schema here for {sorted(set(counts) - set(KINDS))}"
    errors = [line for doc in docs for line in problems(doc)]
    assert not errors, f"{scenario}:\n" + "\n".join(errors)
    version = schema(KINDS[0])["x-generated-from"]["version"]
    checked = ", ".join(f"{counts[kind]} {kind}" for kind in KINDS)
    print(f"{scenario} --api-versions {CRD_API}: {checked} valid (strict) against {PACKAGE} {version}")


# --- the check catches mistakes --------------------------------------------------------------------------------


def _break(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[int(last) if isinstance(node, list) else last] = value


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        ("ServiceMonitor", "spec.endpoints.0.scrapeIntervall", "30s", "'scrapeIntervall' was unexpected"),
        ("ServiceMonitor", "spec.endpoints.0.interval", 30, "30 is not of type 'string'"),
        ("ServiceMonitor", "spec.endpoints.0.scrapeTimeout", "10 seconds", "'10 seconds' does not match"),
        ("ServiceMonitor", "spec.endpoints.0.relabelings.0.action", "rename", "'rename' is not one of"),
        ("ServiceMonitor", "spec.namespaceSelector.matchName", ["trader"], "'matchName' was unexpected"),
        ("ServiceMonitor", "spec.selector", None, "None is not of type 'object'"),
        ("ServiceMonitor", "metadata.labels.release", 1, "1 is not of type 'string'"),
        ("ServiceMonitor", "metadata.name", "Trader_Monitor", "'Trader_Monitor' does not match"),
        ("ServiceMonitor", "metadata.namespace", ["trader"], "is not of type 'string'"),
        ("PrometheusRule", "spec.groups.0.rules.0.severity", "warning", "'severity' was unexpected"),
        ("PrometheusRule", "spec.groups.0.rules.0.for", "5 minutes", "'5 minutes' does not match"),
        ("PrometheusRule", "spec.groups.0.rules.0.expr", 1.5, "1.5 is not of type"),
        ("PrometheusRule", "spec.groups.0.partial_response_strategy", "ignore", "'ignore' does not match"),
        ("PrometheusRule", "spec.group", [], "'group' was unexpected"),
    ],
)
def test_a_broken_object_is_refused_naming_the_field(
    with_operator: list[dict[str, Any]], kind: str, path: str, value: Any, message: str
) -> None:
    doc = copy.deepcopy(by_kind(with_operator, kind)[0])
    assert not problems(doc), "the rendered object must be valid before it is broken"
    _break(doc, path, value)
    found = problems(doc)
    parent, field = path.rsplit(".", 1)
    # A wrong value is reported at its path; an unknown field at its parent, with the field in the message.
    named = [line for line in found if f": {path}: " in line or (f": {parent}: " in line and f"'{field}'" in line)]
    assert found and named == found, found
    assert any(message in line for line in found), found


def test_fields_of_embedded_structs_and_open_maps_are_accepted(with_operator: list[dict[str, Any]]) -> None:
    monitor = copy.deepcopy(by_kind(with_operator, "ServiceMonitor")[0])
    # From the operator's HTTPConfig and TLS structs, embedded in Endpoint: closing must not lose them.
    monitor["spec"]["endpoints"][0] |= {
        "honorLabels": True,
        "tlsConfig": {"insecureSkipVerify": True, "serverName": "ratelimit"},
        "authorization": {"credentials": {"name": "token", "key": "value"}},
        "params": {"module": ["http_2xx"]},
    }
    monitor["metadata"]["annotations"] = {"example.com/owner": "trading"}
    assert not problems(monitor)
