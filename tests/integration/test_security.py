"""Every write needs a token, the operator's writes need the operator's, and no secret ever reaches a log or an
answer: checked on the real services, with the write routes enumerated from each OpenAPI document."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.stack import CONTRACT_PORTS, ROOT, Stack
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

API_TOKEN = "svc-token-4f1e9c2a7b"
OPERATOR_TOKEN = "op-token-8d3b6e1f5c"
WRITES = ("post", "put", "patch", "delete")
# The writes only the operator may make, per service; every other write takes the services' token.
OPERATOR_WRITES = {
    "ratelimit": {("PUT", "/v1/limits/{pool}"), ("DELETE", "/v1/limits/{pool}")},
    "universe": {("POST", "/v1/cache/invalidate")},
    "strategy": {("PUT", "/v1/policy")},
    "executor": {("POST", "/v1/halt"), ("POST", "/v1/resume")},
    "exchange_sim": set(),
}
# The simulator's Coinbase paths are guarded by Coinbase's JWT, not by our tokens.
COINBASE_PATHS = ("/api/v3/", "/v2/")


@pytest.fixture
def stack(redis_url: str, start_stack: StackFactory) -> Stack:
    tokens = {"TRADER_API_TOKEN": API_TOKEN, "TRADER_OPERATOR_TOKEN": OPERATOR_TOKEN}
    return start_stack(redis_url, extra_env=tokens)


def write_routes(base: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{base}/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item if method in WRITES]


def call(base: str, method: str, path: str, token: str | None) -> httpx.Response:
    concrete = re.sub(r"\{[^}]+\}", "x", path)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.request(method, f"{base}{concrete}", headers=headers, json={}, timeout=10)


def test_every_write_refuses_a_missing_or_wrong_token_and_the_operators_refuse_the_services_token(
    stack: Stack,
) -> None:
    checked = 0
    for name in CONTRACT_PORTS:
        base = stack.url(name)
        routes = [(m, p) for m, p in write_routes(base) if not p.startswith(COINBASE_PATHS)]
        assert routes, f"{name} documents no write"
        operator = OPERATOR_WRITES[name]
        assert operator <= set(routes), f"{name}: operator writes missing from the OpenAPI: {operator - set(routes)}"
        for method, path in routes:
            for token in (None, "wrong-token-123", API_TOKEN[:-1]):
                answer = call(base, method, path, token)
                assert answer.status_code == 401, f"{name} {method} {path} with {token!r}: {answer.status_code}"
                assert answer.json()["error"] == "unauthorized"
            if (method, path) in operator:
                refused = call(base, method, path, API_TOKEN)
                assert refused.status_code == 403, f"{name} {method} {path}: the services' token got through"
                assert "TRADER_OPERATOR_TOKEN" in refused.json()["message"]
                assert call(base, method, path, OPERATOR_TOKEN).status_code not in (401, 403)
            checked += 1
    print(f"\n{checked} write routes checked across {len(CONTRACT_PORTS)} services")


def test_the_operator_token_does_what_the_services_token_may_not(stack: Stack) -> None:
    executor = stack.url("executor")
    assert call(executor, "POST", "/v1/halt", API_TOKEN).status_code == 403
    halted = httpx.post(f"{executor}/v1/halt", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert halted.json() == {"halted": True}
    resumed = httpx.post(f"{executor}/v1/resume", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
    assert resumed.json() == {"halted": False}


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, str]:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        .decode()
    )
    path = tmp_path / "cdp_api_key.json"
    path.write_text(
        '{"name": "organizations/o/apiKeys/secret-test", "privateKey": ' + repr(pem).replace("'", '"') + "}"
    )
    return path, pem


def test_no_secret_reaches_a_log_line_or_an_answer(
    redis_url: str, start_stack: StackFactory, key_file: tuple[Path, str]
) -> None:
    path, pem = key_file
    env = {"TRADER_API_TOKEN": API_TOKEN, "TRADER_OPERATOR_TOKEN": OPERATOR_TOKEN, "COINBASE_API_KEY_FILE": str(path)}
    stack = start_stack(redis_url, extra_env=env | {"LOG_LEVEL": "DEBUG", "STRATEGY__CYCLE_INTERVAL_S": "1"})
    answers: list[httpx.Response] = []
    for name in CONTRACT_PORTS:
        base = stack.url(name)
        for method, route in write_routes(base):
            if not route.startswith(COINBASE_PATHS):
                answers += [call(base, method, route, token) for token in (API_TOKEN[:-1], OPERATOR_TOKEN[:-1])]
        answers += [httpx.get(f"{base}{p}") for p in ("/v1/config", "/readyz", "/metrics", "/nope")]
    strategy = stack.url("strategy")
    answers.append(httpx.post(f"{strategy}/v1/cycle", headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=60))
    answers.append(
        httpx.post(
            f"{stack.url('executor')}/v1/proposals",
            content=b"{not json",
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        )
    )
    time.sleep(2)  # a few cycles and exchange calls, each signed with the key
    stack.stop()
    logs = {log.name: log.read_text(errors="replace") for log in (stack.log_dir or Path()).glob("*.log")}
    assert set(logs) == {f"{name}.log" for name in CONTRACT_PORTS} and all(logs.values())
    key_body = "".join(pem.strip().splitlines()[1:-1])
    secrets = {
        "the services' token": API_TOKEN,
        "the operator token": OPERATOR_TOKEN,
        "a wrong token sent": API_TOKEN[:-1],
        "the private key": key_body[:40],
    }
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.items()
        for where, text in [
            *logs.items(),
            *((f"answer {a.request.method} {a.request.url.path}", a.text) for a in answers),
        ]
        if secret in text
    ]
    jwt_like = re.compile(r"eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.")
    leaks += [f"a JWT in {where}" for where, text in logs.items() if jwt_like.search(text)]
    assert not leaks, leaks
    print(f"\n{sum(len(t.splitlines()) for t in logs.values())} log lines and {len(answers)} answers searched")


def test_live_mode_refuses_the_development_tokens_and_a_missing_key(redis_url: str) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({}, "development token is refused in live mode"),
        ({"TRADER_API_TOKEN": API_TOKEN}, "development token is refused in live mode"),
        ({"TRADER_API_TOKEN": API_TOKEN, "TRADER_OPERATOR_TOKEN": API_TOKEN}, "must differ from TRADER_API_TOKEN"),
        ({"TRADER_API_TOKEN": API_TOKEN, "TRADER_OPERATOR_TOKEN": OPERATOR_TOKEN}, "no Coinbase API key"),
    ]
    base = {"PATH": "/usr/bin:/bin", "TRADING_MODE": "live", "REDIS_URL": redis_url, "PORT": "0"}
    for extra, reason in cases:
        started = subprocess.run(
            [sys.executable, "-m", "services.executor"],
            cwd=ROOT,
            env=base | extra,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert started.returncode == 2, (extra, started.stderr[-500:])
        assert reason in started.stderr and "Traceback" not in started.stderr, started.stderr[-500:]
