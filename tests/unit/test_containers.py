"""The container files keep the Platform contract: compose, Dockerfile and .env.example."""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
from honcho.environ import parse_procfile
from pydantic import BaseModel

from services.ratelimit.settings import RatelimitSettings
from shared.settings import ServiceSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]

APP_PORTS = {"ratelimit": 8001, "universe": 8002, "strategy": 8003, "executor": 8004, "exchange_sim": 8010}
CONTRACT_PORTS = APP_PORTS | {"redis": 6379, "prometheus": 9090, "grafana": 3000}
CONTRACT_ENV = {
    "PORT",
    "REDIS_URL",
    "RATELIMIT_URL",
    "UNIVERSE_URL",
    "STRATEGY_URL",
    "EXECUTOR_URL",
    "EXCHANGE_API_URL",
    "TRADER_API_TOKEN",
    "TRADER_OPERATOR_TOKEN",
    "CONFIG_DIR",
    "TRADING_MODE",
}
OPTIONAL_ENV = {"LOG_LEVEL", "KEY_PREFIX"}
# Variables one service reads on top of the contract.
SERVICE_ENV = {"exchange_sim": {"SIM_SPEED", "SIM_SEED"}}
SERVICE_URLS = {
    "RATELIMIT_URL": "http://ratelimit:8001",
    "UNIVERSE_URL": "http://universe:8002",
    "STRATEGY_URL": "http://strategy:8003",
    "EXECUTOR_URL": "http://executor:8004",
    "REDIS_URL": "redis://redis:6379/0",
    "CONFIG_DIR": "/app/config",
}
APP_DEPENDS_ON = {
    "ratelimit": {"redis"},
    "exchange_sim": {"redis"},
    "universe": {"redis", "ratelimit", "exchange_sim"},
    "executor": {"redis", "ratelimit", "exchange_sim"},
    "strategy": {"redis", "ratelimit", "universe", "executor", "exchange_sim"},
}
ENV_LINE = re.compile(r"^\s*#?\s*([A-Z][A-Z0-9_]*)=")
# Variables compose itself reads, not the services.
COMPOSE_ONLY_ENV = {"GRAFANA_ADMIN_PASSWORD"}


def find_tool(name: str) -> str:
    """The tool the project installs next to this interpreter (the venv), whatever else PATH holds: an older
    docker-compose from the system would check the file with other rules."""
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} not found in {Path(sys.executable).parent}; run `make venv` to install it")
    return found


def test_the_tools_are_the_projects_whatever_is_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("docker-compose", "hadolint"):
        impostor = tmp_path / name
        impostor.write_text("#!/bin/sh\necho 'docker-compose version 1.29.2'\n")
        impostor.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    for name in ("docker-compose", "hadolint"):
        assert Path(find_tool(name)).parent == Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`docker-compose config` of the committed file, without the caller's .env or contract variables."""
    empty_env_file = tmp_path_factory.mktemp("compose") / "empty.env"
    empty_env_file.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in CONTRACT_ENV | OPTIONAL_ENV and not k.startswith("COMPOSE_")}
    command = [find_tool("docker-compose"), "--env-file", str(empty_env_file), "-f", "docker-compose.yml"]
    result = subprocess.run(
        [*command, "config", "--format", "json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    # The PyPI wrapper exits 0 even when validation fails; an empty stdout is the reliable sign.
    if result.returncode != 0 or not result.stdout.strip():
        pytest.fail(f"docker-compose.yml is invalid:\n{result.stderr}")
    return json.loads(result.stdout)


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    missing = set(CONTRACT_PORTS) - set(compose["services"])
    assert not missing, f"services missing from docker-compose.yml: {sorted(missing)}"


def one_shot_jobs(compose: dict[str, Any]) -> set[str]:
    """Services others wait on to finish (setup steps), rather than to be healthy."""
    return {
        dependency
        for service in compose["services"].values()
        for dependency, spec in service.get("depends_on", {}).items()
        if spec.get("condition") == "service_completed_successfully"
    }


def test_every_service_has_a_healthcheck_and_restarts(compose: dict[str, Any]) -> None:
    jobs = one_shot_jobs(compose)
    assert jobs == {"grafana-password"}
    for name in jobs:
        assert compose["services"][name].get("restart") == "no", f"{name} is a one-shot job and must not restart"
    for name, service in compose["services"].items():
        if name in jobs:
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
        assert service.get("restart") == "unless-stopped", f"{name}: restart is {service.get('restart')!r}"
        assert "container_name" not in service, f"{name} sets container_name"


def test_published_ports_are_loopback_contract_ports(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} on all interfaces"
            assert int(port["published"]) == port["target"] == CONTRACT_PORTS[name], f"{name}: {port}"
    for name in set(APP_PORTS) | {"prometheus", "grafana"}:
        assert compose["services"][name].get("ports"), f"{name} publishes no port"


def test_app_services_get_exactly_the_contract_environment(compose: dict[str, Any]) -> None:
    for name, port in APP_PORTS.items():
        service = compose["services"][name]
        env = service.get("environment") or {}
        expected = CONTRACT_ENV | OPTIONAL_ENV | SERVICE_ENV.get(name, set())
        assert set(env) == expected, f"{name}: environment names {sorted(env)}"
        assert env["PORT"] == str(port)
        assert {k: env[k] for k in SERVICE_URLS} == SERVICE_URLS, f"{name} does not point at the compose services"
        assert env["EXCHANGE_API_URL"] == "http://exchange_sim:8010"
        assert env["TRADING_MODE"] == "sim"
        config_mounts = [v for v in service.get("volumes", []) if v.get("target") == "/app/config"]
        assert config_mounts and config_mounts[0].get("read_only"), f"{name}: ./config not mounted read-only"


def test_app_services_run_the_procfile_command_from_the_one_dockerfile(compose: dict[str, Any]) -> None:
    procfile = parse_procfile((ROOT / "Procfile").read_text()).processes
    assert set(procfile) == set(APP_PORTS)
    for name, line in procfile.items():
        service = compose["services"][name]
        assert service.get("command") == shlex.split(line), f"{name}: command differs from the Procfile"
        build = service.get("build") or {}
        assert build.get("dockerfile") == "Dockerfile"
        assert build.get("args", {}).get("SERVICE") == name


def test_depends_on_waits_for_healthy(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for dependency, spec in service.get("depends_on", {}).items():
            expected = "service_completed_successfully" if dependency in one_shot_jobs(compose) else "service_healthy"
            assert spec.get("condition") == expected, f"{name} -> {dependency}: {spec}"
    for name, expected in APP_DEPENDS_ON.items():
        assert set(compose["services"][name].get("depends_on", {})) == expected, name
    assert set(compose["services"]["prometheus"].get("depends_on", {})) >= set(APP_PORTS)


def test_redis_persists_with_appendonly(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    command = redis.get("command") or []
    assert "--appendonly" in command and command[command.index("--appendonly") + 1] == "yes"
    assert any(v.get("type") == "volume" and v.get("target") == "/data" for v in redis.get("volumes", []))


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [find_tool("hadolint"), "--failure-threshold", "error", "--format", "json", "Dockerfile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [f"line {f['line']}: {f['code']} {f['message']}" for f in findings if f.get("level") == "error"]
    assert result.returncode == 0 and not errors, f"hadolint: {errors or result.stderr}"


def _settings_classes() -> list[type[ServiceSettings]]:
    """Every service's settings class."""
    classes = []
    for name in APP_PORTS:
        module = importlib.import_module(f"services.{name}.settings")
        classes += [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, ServiceSettings) and obj is not ServiceSettings
        ]
    return classes


def _has_field_path(model: type[BaseModel], parts: list[str]) -> bool:
    """Whether `a__b` names a field `b` of a nested model field `a`, as env_nested_delimiter reads it."""
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    if len(parts) == 1:
        return True
    nested = [t for t in (field.annotation, *typing.get_args(field.annotation)) if isinstance(t, type)]
    return any(issubclass(t, BaseModel) and _has_field_path(t, parts[1:]) for t in nested)


def _env_example_names() -> set[str]:
    """Variables named in .env.example, set or commented out."""
    lines = (ROOT / ".env.example").read_text().splitlines()
    return {m.group(1) for line in lines if (m := ENV_LINE.match(line))}


def test_env_example_names_only_variables_the_settings_read() -> None:
    names = _env_example_names()
    prefix = ServiceSettings.model_config.get("env_prefix") or ""
    contract = {prefix + field.upper() for field in ServiceSettings.model_fields}
    assert contract >= CONTRACT_ENV | OPTIONAL_ENV, "the settings contract no longer reads a documented variable"

    missing = (CONTRACT_ENV | OPTIONAL_ENV) - names
    assert not missing, f".env.example does not document {sorted(missing)}"
    nested = {n for n in names if "__" in n}
    assert nested, ".env.example shows no nested domain override"
    classes = _settings_classes()
    unread = {
        n
        for n in names - contract - COMPOSE_ONLY_ENV
        if not any(_has_field_path(cls, n.lower().split("__")) for cls in classes)
    }
    assert not unread, f".env.example names variables no service reads: {sorted(unread)}"


def test_env_example_documents_every_compose_variable() -> None:
    names = _env_example_names()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (ROOT / "docker-compose.yml").read_text()))
    assert used <= names, f"docker-compose.yml reads variables .env.example does not document: {sorted(used - names)}"


def test_services_listen_on_loopback_outside_containers_and_on_every_interface_inside() -> None:
    assert load_settings(RatelimitSettings).bind_host == "127.0.0.1"
    assert re.search(r"^\s*BIND_HOST=0\.0\.0\.0\b", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_grafana_opens_the_overview_for_anonymous_viewers_and_never_has_the_default_password(
    compose: dict[str, Any],
) -> None:
    grafana = compose["services"]["grafana"]
    env = grafana.get("environment") or {}
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert "GF_SECURITY_ADMIN_PASSWORD" not in env, "the admin password must come from the grafana-password job"
    secret = env["GF_SECURITY_ADMIN_PASSWORD__FILE"]
    mounts = {v["target"]: v for v in grafana.get("volumes", [])}
    assert mounts[str(Path(secret).parent)]["source"] == "grafana-secret"
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    dashboards = mounts["/var/lib/grafana/dashboards"]
    assert Path(dashboards["source"]) == ROOT / "grafana" / "dashboards" and dashboards.get("read_only")
    assert json.loads((ROOT / "grafana" / "dashboards" / Path(home).name).read_text())["title"] == "Trader overview"
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", grafana["image"]), "pin Grafana to an exact version"
    assert compose["services"]["grafana-password"]["image"] == grafana["image"]


def run_password_job(secret_dir: Path, password: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "SECRET_DIR": str(secret_dir), "GRAFANA_UID": str(os.getuid())}
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    script = ROOT / "grafana" / "admin-password.sh"
    return subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=10, check=False)


def test_grafana_password_is_generated_once_and_kept_or_taken_from_the_environment(tmp_path: Path) -> None:
    first = run_password_job(tmp_path, None)
    assert first.returncode == 0, first.stderr
    generated = (tmp_path / "admin_password").read_text()
    assert len(generated) >= 20 and generated != "admin" and generated in first.stdout
    again = run_password_job(tmp_path, None)
    assert again.returncode == 0 and (tmp_path / "admin_password").read_text() == generated
    assert generated not in again.stdout, "the password is printed only when it is generated"
    chosen = run_password_job(tmp_path, "correct horse battery staple")
    assert chosen.returncode == 0 and (tmp_path / "admin_password").read_text() == "correct horse battery staple"
    refused = run_password_job(tmp_path, "admin")
    assert refused.returncode == 1 and "GRAFANA_ADMIN_PASSWORD" in refused.stderr


def test_app_containers_run_as_a_non_root_user_on_a_read_only_filesystem_without_capabilities(
    compose: dict[str, Any],
) -> None:
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert users and all(int(uid) >= 10000 for uid, _ in users), f"the image's USER is {users}"
    for name in APP_PORTS:
        service = compose["services"][name]
        assert service.get("read_only") is True, f"{name}: root filesystem is writable"
        assert "/tmp" in (service.get("tmpfs") or []), f"{name}: no tmpfs at /tmp"
        assert service.get("cap_drop") == ["ALL"], f"{name}: capabilities kept: {service.get('cap_drop')}"
        assert "no-new-privileges:true" in (service.get("security_opt") or []), f"{name}: may gain privileges"
        assert "user" not in service, f"{name}: overrides the image's non-root user"
