"""The Helm chart keeps the platform contract the way compose does (tests/unit/test_containers.py), and every object
it renders is valid Kubernetes: helm lint --strict, helm template per CI scenario, kubernetes-validate --strict.

helm comes from devtools/helm.py (a pinned PyPI wheel, cached in .tools/); nothing here is skipped: a missing
tool is a failure naming how to get it.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from honcho.environ import parse_procfile

from devtools import helm
from shared.redis import parse_sentinel_url
from tests.unit.test_containers import APP_PORTS, CONTRACT_ENV, OPTIONAL_ENV, SERVICE_ENV

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CHART = helm.CHART
SCENARIOS = ("sim", "live", "external-redis", "sentinel")
# Every scenario rendered as is, plus the default one on a cluster with the Prometheus operator.
RUNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sim": ("sim", ()),
    "live": ("live", ()),
    "external-redis": ("external-redis", ()),
    "sentinel": ("sentinel", ()),
    "sim+prometheus-operator": ("sim", ("--api-versions", "monitoring.coreos.com/v1")),
}
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
# Kinds no bundled schema covers, allowed only for this API group (CRDs of the Prometheus operator).
CRD_API = "monitoring.coreos.com/v1"
# Set by the chart on top of the compose environment: the image sets it too, but a pod listening on loopback
# would fail every probe.
CHART_ONLY_ENV = {"BIND_HOST"}
LIVE_ENV = {"COINBASE_API_KEY_NAME", "COINBASE_API_KEY_SECRET"}
# Who calls whom, from the URLs each service uses (services/*/main.py dependency checks).
CALLERS = {
    "ratelimit": {"universe", "strategy", "executor"},
    "universe": {"strategy"},
    "executor": {"strategy"},
    "strategy": set(),
    "exchange_sim": {"universe", "strategy", "executor"},
}
URL_VARS = {
    "RATELIMIT_URL": "ratelimit",
    "UNIVERSE_URL": "universe",
    "STRATEGY_URL": "strategy",
    "EXECUTOR_URL": "executor",
}


def run_helm(*args: str) -> Any:
    try:
        return helm.helm(*args)
    except helm.HelmError as exc:
        pytest.fail(f"cannot get helm ({exc}); `python -m devtools.helm path` fetches it (needs PyPI once)")


def render(scenario: str | None, *extra: str) -> list[dict[str, Any]]:
    values = ["--values", str(helm.ci_values(scenario))] if scenario else []
    result = run_helm("template", "trader", str(CHART), "--namespace", "trader", *values, *extra)
    assert result.returncode == 0, f"helm template {scenario} {extra} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_fails(*extra: str) -> str:
    result = run_helm("template", "trader", str(CHART), "--namespace", "trader", *extra)
    assert result.returncode != 0, f"helm template {extra} rendered, expected a refusal"
    return result.stderr


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {run: render(scenario, *extra) for run, (scenario, extra) in RUNS.items()}


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    """The service a (pod-template) object belongs to, from its component label."""
    return obj["metadata"]["labels"]["app.kubernetes.io/component"].replace("-", "_")


def deployments(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {component(d): d for d in by_kind(docs, "Deployment")}


def scenario_values(scenario: str) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    overrides = yaml.safe_load(helm.ci_values(scenario).read_text()) or {}

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        out = dict(base)
        for key, value in extra.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    return merge(defaults, overrides)


# --- the tool and the sources -------------------------------------------------------------------------------


def test_helm_is_the_pinned_one_from_tools() -> None:
    path = helm.ensure_helm()
    assert path.is_relative_to(ROOT / ".tools")
    version = run_helm("version", "--short")
    assert version.returncode == 0 and version.stdout.startswith(helm.HELM_VERSION), version.stdout + version.stderr


def test_ci_scenarios_are_the_tested_ones() -> None:
    found = {p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")}
    assert found == set(SCENARIOS)


@pytest.mark.parametrize(
    ("link", "target"),
    [("config", "config"), ("rules", "prometheus/rules"), ("dashboards", "grafana/dashboards")],
)
def test_chart_files_are_symlinks_to_the_one_source(link: str, target: str) -> None:
    path = CHART / "files" / link
    assert path.is_symlink(), f"{path} must be a symlink to the repository's {target}/ (one source), not a copy"
    assert path.resolve() == (ROOT / target).resolve()
    assert not Path(path.readlink()).is_absolute(), "a relative link works in every checkout"


# --- lint, render, validate ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", [None, *SCENARIOS], ids=["defaults", *SCENARIOS])
def test_helm_lint_strict(scenario: str | None) -> None:
    values = ["--values", str(helm.ci_values(scenario))] if scenario else []
    result = run_helm("lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], run: str, kube_version: str
) -> None:
    docs = rendered[run]
    assert docs, f"{run} rendered nothing"
    errors, crds = [], Counter[str]()
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            if doc.get("apiVersion") == CRD_API:
                crds[doc["kind"]] += 1
            else:
                errors.append(f"{name}: no schema for {doc.get('apiVersion')} in Kubernetes {kube_version}")
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{name}: {exc.message} at {'.'.join(map(str, exc.path))}")
    assert not errors, "\n".join(errors)
    kinds = Counter(d["kind"] for d in docs)
    print(
        f"{run} @ {kube_version}: {len(docs)} objects, {len(docs) - crds.total()} validated,"
        f" CRDs {dict(crds)}; {dict(kinds)}"
    )
    if run.endswith("prometheus-operator"):
        assert crds["ServiceMonitor"] == len(deployments(docs)) and crds["PrometheusRule"] == 1
    else:
        assert not crds, f"monitoring.coreos.com objects without the API: {dict(crds)}"


def test_object_names_are_unique_per_kind(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for run, docs in rendered.items():
        keys = Counter((d["kind"], d["metadata"]["name"]) for d in docs)
        assert all(n == 1 for n in keys.values()), f"{run}: duplicates {[k for k, n in keys.items() if n > 1]}"
        assert all(d["metadata"].get("namespace") == "trader" for d in docs), f"{run}: object outside the namespace"


# --- refusals ------------------------------------------------------------------------------------------------------


def test_live_without_a_secret_refuses_to_render_and_says_what_to_give() -> None:
    stderr = render_fails("--set", "exchange.mode=live")
    assert "exchange.mode=live" in stderr and "secrets.existingSecret" in stderr, stderr
    for value in (
        "secrets.apiToken",
        "secrets.operatorToken",
        "secrets.coinbaseApiKeyName",
        "secrets.coinbaseApiKeySecret",
    ):
        assert value in stderr, stderr


def test_live_refuses_partial_or_development_credentials() -> None:
    partial = render_fails("--set", "exchange.mode=live", "--set", "secrets.apiToken=abcdefghijkl")
    assert "secrets.operatorToken" in partial and "secrets.apiToken," not in partial, partial
    keys = [
        "--set",
        "secrets.coinbaseApiKeyName=organizations/o/apiKeys/k",
        "--set",
        "secrets.coinbaseApiKeySecret=pem",
    ]
    dev = render_fails(
        "--set", "exchange.mode=live", "--set", "secrets.apiToken=dev-token-change-me",
        "--set", "secrets.operatorToken=other-operator-token", *keys,
    )  # fmt: skip
    assert "development tokens are refused" in dev, dev
    same = render_fails(
        "--set", "exchange.mode=live", "--set", "secrets.apiToken=same-token-1",
        "--set", "secrets.operatorToken=same-token-1", *keys,
    )  # fmt: skip
    assert "must differ" in same, same


def test_live_with_given_credentials_makes_the_secret_and_uses_coinbase() -> None:
    docs = render(
        None, "--set", "exchange.mode=live", "--set", "secrets.apiToken=api-token-123",
        "--set", "secrets.operatorToken=operator-token-456",
        "--set", "secrets.coinbaseApiKeyName=organizations/o/apiKeys/k",
        "--set", "secrets.coinbaseApiKeySecret=pem-body",
    )  # fmt: skip
    (secret,) = [s for s in by_kind(docs, "Secret") if s["metadata"]["name"] == "trader-trader-stack"]
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data == {
        "TRADER_API_TOKEN": "api-token-123",
        "TRADER_OPERATOR_TOKEN": "operator-token-456",
        "COINBASE_API_KEY_NAME": "organizations/o/apiKeys/k",
        "COINBASE_API_KEY_SECRET": "pem-body",
    }
    assert "exchange_sim" not in deployments(docs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--set", "bogus=1"), "additional properties 'bogus' not allowed"),
        (("--set", "services.ratelimit.bogus=1"), "additional properties 'bogus' not allowed"),
        (("--set", "redis.mode=cluster"), "value must be one of 'standalone', 'sentinel', 'external'"),
        (("--set", "redis.mode=sentinel", "--set", "redis.sentinel.replicas=2"), "/redis/sentinel/replicas"),
        (
            ("--set", "redis.mode=sentinel", "--set", "redis.sentinel.quorum=4"),
            "redis.sentinel.quorum=4 is more than redis.sentinel.replicas=3",
        ),
        (
            ("--set", "redis.mode=sentinel", "--set", "redis.persistence.enabled=false"),
            "redis.mode=sentinel needs redis.persistence.enabled",
        ),
        (
            ("--set", "redis.mode=sentinel", "--set", "redis.sentinel.minReplicasToWrite=3"),
            "redis.sentinel.minReplicasToWrite=3 needs that many replicas",
        ),
        (("--set", "exchange.mode=paper"), "value must be one of 'sim', 'live'"),
        (("--set", "redis.mode=external"), "redis.mode=external needs redis.external.url"),
        (("--set", "redis.mode=external", "--set", "redis.external.url=http://x"), "/redis/external/url"),
        (
            ("--set", "redis.mode=external", "--set", "redis.external.sentinel.hosts={s1:26379}"),
            "redis.external.sentinel.hosts needs redis.external.sentinel.masterName",
        ),
        (
            (
                "--values",
                str(helm.ci_values("external-redis")),
                "--set",
                "redis.external.sentinel.hosts={s1:26379}",
                "--set",
                "redis.external.sentinel.masterName=m",
            ),
            "redis.external.url and redis.external.sentinel.hosts both given",
        ),
        (("--set", "services.universe.env.PORT=1"), "the chart sets PORT itself"),
        (("--set", "services.executor.resources=null"), "resources"),
    ],
)
def test_values_outside_the_schema_or_the_rules_are_refused(args: tuple[str, ...], message: str) -> None:
    stderr = render_fails(*args)
    assert message in stderr, stderr


# --- the contract ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_deployments_and_services_keep_the_contract_ports_and_procfile_commands(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    live = scenario_values(scenario)["exchange"]["mode"] == "live"
    expected = set(APP_PORTS) - ({"exchange_sim"} if live else set())
    found = deployments(docs)
    assert set(found) == expected
    procfile = parse_procfile((ROOT / "Procfile").read_text()).processes
    services = {component(s): s for s in by_kind(docs, "Service") if component(s) != "redis"}
    assert set(services) == expected
    for name, deployment in found.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == shlex.split(procfile[name]), f"{name}: command differs from the Procfile"
        assert container["ports"] == [{"name": "http", "containerPort": APP_PORTS[name], "protocol": "TCP"}]
        (port,) = services[name]["spec"]["ports"]
        assert port["name"] == "http" and port["port"] == APP_PORTS[name] and port["targetPort"] == "http"
        assert services[name]["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        assert (
            deployment["spec"]["template"]["metadata"]["labels"].items() >= services[name]["spec"]["selector"].items()
        )


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_service_gets_exactly_the_contract_environment(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    values = scenario_values(scenario)
    live = values["exchange"]["mode"] == "live"
    service_names = {component(s): s["metadata"]["name"] for s in by_kind(docs, "Service")}
    for name, deployment in deployments(docs).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert len(env) == len(container["env"]), f"{name}: a variable is set twice"
        extra = set(values["services"][name].get("env") or {})
        wanted = (
            CONTRACT_ENV | OPTIONAL_ENV | CHART_ONLY_ENV | SERVICE_ENV.get(name, set()) | (LIVE_ENV if live else set())
        )
        assert set(env) == wanted | extra, f"{name}: {sorted(set(env) ^ (wanted | extra))}"
        assert env["PORT"]["value"] == str(APP_PORTS[name]) and env["BIND_HOST"]["value"] == "0.0.0.0"
        for var, target in URL_VARS.items():
            assert env[var]["value"] == f"http://{service_names[target]}:{APP_PORTS[target]}", f"{name}: {var}"
        exchange = env["EXCHANGE_API_URL"]["value"]
        if live:
            assert exchange == "https://api.coinbase.com" and env["TRADING_MODE"]["value"] == "live"
        else:
            assert exchange == f"http://{service_names['exchange_sim']}:8010" and env["TRADING_MODE"]["value"] == "sim"
        secret_vars = {"TRADER_API_TOKEN", "TRADER_OPERATOR_TOKEN"} | (LIVE_ENV if live else set())
        for var in secret_vars:
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["key"] == var and "value" not in env[var], f"{name}: {var} not from the Secret"
            assert ref["name"] == (values["secrets"]["existingSecret"] or "trader-trader-stack")
        if values["redis"]["mode"] == "standalone":
            assert env["REDIS_URL"]["value"] == f"redis://{service_names['redis']}:6379/0"
        elif values["redis"]["mode"] == "sentinel":
            assert env["REDIS_URL"]["value"] == sentinel_url(docs), "the services must ask every pod's sentinel"
        else:
            assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "REDIS_URL", (
                "an external URL may hold a password"
            )
        assert env["CONFIG_DIR"]["value"] == "/app/config"
        assert env["KEY_PREFIX"]["value"] == values["keyPrefix"] and env["LOG_LEVEL"]["value"] == values["logLevel"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_probes_resources_spread_and_disruption_budgets(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    values = scenario_values(scenario)
    pdbs = {component(p): p for p in by_kind(docs, "PodDisruptionBudget")}
    assert all(p["apiVersion"] == "policy/v1" for p in pdbs.values())
    for name, deployment in deployments(docs).items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert container[probe]["httpGet"] == {"path": path, "port": "http"}, f"{name}: {probe}"
        assert container["resources"]["requests"].keys() >= {"cpu", "memory"}, name
        assert "memory" in container["resources"]["limits"], name
        replicas = values["services"][name]["replicas"]
        assert deployment["spec"]["replicas"] == replicas
        (spread,) = spec["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
        if replicas > 1:
            assert pdbs[name]["spec"]["selector"] == deployment["spec"]["selector"], name
        else:
            assert name not in pdbs, f"{name}: a PDB on one replica blocks every node drain"
    for sts in by_kind(docs, "StatefulSet"):
        for container in sts["spec"]["template"]["spec"]["containers"]:
            assert container["resources"]["requests"] and container["resources"]["limits"]
            assert {"startupProbe", "livenessProbe", "readinessProbe"} <= container.keys()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_runs_non_root_read_only_without_capabilities_or_token(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    workloads = [d for d in rendered[scenario] if d["kind"] in ("Deployment", "StatefulSet")]
    assert workloads
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, name
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001 and context["runAsUser"] >= 10000
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True, name
            (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]], f"{name}: /tmp is not an emptyDir"
    for account in by_kind(rendered[scenario], "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_the_image_user_is_the_pods_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in text, "the chart runs as 10001: keep the Dockerfile's USER and the chart together"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_config_is_the_repositorys_config_mounted_read_only(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    configs = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}
    expected = {p.name: p.read_text() for p in sorted((ROOT / "config").glob("*.yaml"))}
    assert expected
    for name, deployment in deployments(docs).items():
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/app/config"]
        assert mount["readOnly"] is True, name
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert configs[volume["configMap"]["name"]]["data"] == expected, f"{name}: config differs from config/"
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert "checksum/config" in annotations, f"{name}: a config change would not roll the pods"


# --- Redis -----------------------------------------------------------------------------------------------------------


def test_in_chart_redis_persists_with_appendonly_on_a_volume_claim(rendered: dict[str, list[dict[str, Any]]]) -> None:
    (sts,) = by_kind(rendered["sim"], "StatefulSet")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    (data,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/data"]
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == data["name"] and claim["spec"]["resources"]["requests"]["storage"]
    assert sts["spec"]["replicas"] == 1
    (service,) = [s for s in by_kind(rendered["sim"], "Service") if component(s) == "redis"]
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]


def sentinel_url(docs: list[dict[str, Any]]) -> str:
    """The URL naming each in-chart Sentinel pod by its stable DNS name, as the services must get it."""
    (sts,) = by_kind(docs, "StatefulSet")
    name, service = sts["metadata"]["name"], sts["spec"]["serviceName"]
    hosts = ",".join(f"{name}-{i}.{service}.trader.svc.cluster.local:26379" for i in range(sts["spec"]["replicas"]))
    return f"redis+sentinel://{hosts}/mymaster/0"


def test_in_chart_sentinel_runs_redis_and_sentinel_in_each_of_three_pods_from_the_chart_scripts(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["sentinel"]
    (sts,) = by_kind(docs, "StatefulSet")
    spec = sts["spec"]
    assert spec["replicas"] == 3 and spec["podManagementPolicy"] == "Parallel"
    pod = spec["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["redis"]["command"] == ["sh", "/scripts/redis.sh"]
    assert containers["sentinel"]["command"] == ["sh", "/scripts/sentinel.sh"]
    assert containers["redis"]["readinessProbe"]["exec"]["command"] == ["sh", "/scripts/ready.sh"]
    assert containers["redis"]["env"] == containers["sentinel"]["env"]
    env = {e["name"]: e.get("value") for e in containers["redis"]["env"]}
    assert env["QUORUM"] == "2" and env["MASTER_NAME"] == "mymaster" and env["MIN_REPLICAS_TO_WRITE"] == "1"
    assert sentinel_url(docs).removeprefix("redis+sentinel://").split("/")[0] == env["SENTINEL_NODES"].replace(" ", ",")
    for container in containers.values():
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["data"]["mountPath"] == env["DATA_DIR"] == "/data"  # the sentinel's config beside the data
        assert mounts["scripts"]["mountPath"] == "/scripts" and mounts["scripts"]["readOnly"] is True
    (scripts,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-redis-scripts")]
    expected = {p.name: p.read_text() for p in sorted((CHART / "files" / "redis").glob("*.sh"))}
    assert scripts["data"] == expected
    assert "checksum/scripts" in spec["template"]["metadata"]["annotations"], "a script change must roll the pods"
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "4Gi"
    (anti,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert anti["topologyKey"] == "kubernetes.io/hostname", "two Redis pods on one node: losing it loses the quorum"
    assert anti["labelSelector"]["matchLabels"] == spec["selector"]["matchLabels"]
    assert containers["redis"]["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "/scripts/prestop.sh"]
    (service,) = [s for s in by_kind(docs, "Service") if component(s) == "redis"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"redis": 6379, "sentinel": 26379}
    assert spec["serviceName"] == service["metadata"]["name"]
    (pdb,) = [p for p in by_kind(docs, "PodDisruptionBudget") if component(p) == "redis"]
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": spec["selector"]}


def test_the_redis_pods_scripts_are_clean_posix_sh() -> None:
    scripts = sorted((CHART / "files" / "redis").glob("*.sh"))
    assert scripts
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run(
        [str(shellcheck), "--shell=sh", "--external-sources", "--source-path=SCRIPTDIR", *map(str, scripts)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_external_redis_takes_the_sentinel_url_from_a_secret_and_runs_no_redis(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["external-redis"]
    assert not by_kind(docs, "StatefulSet") and not [s for s in by_kind(docs, "Service") if component(s) == "redis"]
    url = scenario_values("external-redis")["redis"]["external"]["url"]
    assert url.startswith("redis+sentinel://")
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    for deployment in deployments(docs).values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (env,) = [e for e in container["env"] if e["name"] == "REDIS_URL"]
        ref = env["valueFrom"]["secretKeyRef"]
        assert base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode() == url


def test_external_sentinel_hosts_and_master_name_become_the_services_url() -> None:
    docs = render(
        None, "--set", "redis.mode=external",
        "--set", "redis.external.sentinel.hosts={s1.example:26379,[fd00::2]:26380}",
        "--set", "redis.external.sentinel.masterName=prod", "--set", "redis.external.sentinel.db=3",
    )  # fmt: skip
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    for deployment in deployments(docs).values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (env,) = [e for e in container["env"] if e["name"] == "REDIS_URL"]
        ref = env["valueFrom"]["secretKeyRef"]
        url = base64.b64decode(secrets[ref["name"]]["data"][ref["key"]]).decode()
        assert url == "redis+sentinel://s1.example:26379,[fd00::2]:26380/prod/3"
        assert parse_sentinel_url(url).sentinels == (("s1.example", 26379), ("fd00::2", 26380))


# --- network policies ------------------------------------------------------------------------------------------------


def _peer_components(rule: dict[str, Any]) -> set[str]:
    return {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"].replace("-", "_")
        for peer in rule.get("from", [])
        if "podSelector" in peer
    }


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_network_policies_deny_ingress_but_what_the_urls_and_monitoring_need(
    rendered: dict[str, list[dict[str, Any]]], scenario: str
) -> None:
    docs = rendered[scenario]
    values = scenario_values(scenario)
    policies = by_kind(docs, "NetworkPolicy")
    (deny,) = [p for p in policies if p["metadata"]["name"].endswith("default-deny-ingress")]
    assert deny["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in deny["spec"]
    selector = deny["spec"]["podSelector"]["matchLabels"]
    running = deployments(docs)
    for workload in [*running.values(), *by_kind(docs, "StatefulSet")]:
        assert workload["spec"]["template"]["metadata"]["labels"].items() >= selector.items()
    per_component = {component(p): p for p in policies if p is not deny}
    monitoring = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": values["monitoring"]["namespace"]}}
    }
    for name in running:
        rules = per_component[name]["spec"]["ingress"]
        callers = set().union(*(_peer_components(r) for r in rules))
        assert callers == CALLERS[name] & set(running), f"{name} admits {sorted(callers)}"
        assert any(r["from"] == [monitoring] for r in rules), f"{name}: the monitoring namespace cannot scrape /metrics"
        assert all(r["ports"] == [{"port": "http", "protocol": "TCP"}] for r in rules), name
        clients = values["networkPolicy"]["apiClients"]
        assert (not clients) or any(r["from"] == clients for r in rules), f"{name}: apiClients not admitted"
    if values["redis"]["mode"] == "standalone":
        (rule,) = per_component["redis"]["spec"]["ingress"]
        assert _peer_components(rule) == set(running) and rule["ports"] == [{"port": "redis", "protocol": "TCP"}]
    elif values["redis"]["mode"] == "sentinel":
        # the services reach the sentinels and the master; the pods replicate from and vote with each other
        (rule,) = per_component["redis"]["spec"]["ingress"]
        assert _peer_components(rule) == set(running) | {"redis"}
        assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}, {"port": "sentinel", "protocol": "TCP"}]
    else:
        assert "redis" not in per_component


# --- monitoring ------------------------------------------------------------------------------------------------------


def test_service_monitors_and_rules_with_the_operator_annotations_without(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    with_ops = rendered["sim+prometheus-operator"]
    monitors = {component(m): m for m in by_kind(with_ops, "ServiceMonitor")}
    services = {component(s): s for s in by_kind(with_ops, "Service")}
    assert set(monitors) == set(APP_PORTS)
    for name, monitor in monitors.items():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["selector"]["matchLabels"].items() <= services[name]["metadata"]["labels"].items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
        assert {"action": "replace", "targetLabel": "job", "replacement": name} in endpoint["relabelings"]
    for deployment in deployments(with_ops).values():
        assert "prometheus.io/scrape" not in deployment["spec"]["template"]["metadata"]["annotations"]
    (rule,) = by_kind(with_ops, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    groups = [
        g
        for p in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
        for g in yaml.safe_load(p.read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups, "the PrometheusRule differs from prometheus/rules/*.yml"

    for name, deployment in deployments(rendered["sim"]).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/path"] == "/metrics"
        assert annotations["prometheus.io/port"] == str(APP_PORTS[name])


def test_service_monitor_labels_are_configurable() -> None:
    docs = render(None, "--api-versions", CRD_API, "--set", "monitoring.serviceMonitor.labels.release=prom")
    assert {m["metadata"]["labels"]["release"] for m in by_kind(docs, "ServiceMonitor")} == {"prom"}


def test_dashboards_are_the_repositorys_json_as_sidecar_config_maps(rendered: dict[str, list[dict[str, Any]]]) -> None:
    maps = [c for c in by_kind(rendered["sim"], "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    found = {key: value for c in maps for key, value in c["data"].items()}
    expected = {p.name: p.read_text() for p in sorted((ROOT / "grafana" / "dashboards").glob("*.json"))}
    assert found.keys() == expected.keys() and len(maps) == len(expected)
    for key, text in found.items():
        assert json.loads(text) == json.loads(expected[key]), f"{key} differs from grafana/dashboards/{key}"
    for config_map in maps:
        size = len(json.dumps(config_map).encode())
        assert size < 1024 * 1024, f"{config_map['metadata']['name']}: {size} bytes, over the 1 MiB object limit"


def test_rendering_is_quick() -> None:
    start = time.monotonic()
    render("sim")
    assert time.monotonic() - start < 10
