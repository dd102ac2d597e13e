"""The shared app factory: JSON errors, token on writes, health and metrics endpoints."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from services.ratelimit.settings import RatelimitSettings
from shared.app import build_app, dependency_check
from shared.errors import NotFound
from shared.logging import JsonFormatter
from shared.settings import DEV_API_TOKEN, load_settings

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}


class ThingIn(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(gt=0)


def make_router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/things/{name}")
    async def get_thing(name: str) -> dict[str, str]:
        raise NotFound(f"no thing {name!r}", details={"name": name})

    @router.post("/things")
    async def create_thing(thing: ThingIn) -> ThingIn:
        return thing

    @router.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @router.post("/logged")
    async def logged() -> dict[str, str]:
        logging.getLogger("test.route").warning("handled a write")
        return {"ok": "yes"}

    return router


@pytest.fixture
def client() -> Iterator[TestClient]:
    settings = load_settings(RatelimitSettings, redis_url="redis://127.0.0.1:1/0")
    app = build_app(settings, description="test", routers=[make_router()], registry=CollectorRegistry())
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def test_write_without_token_is_401_json(client: TestClient) -> None:
    response = client.post("/v1/things", json={"name": "a", "size": 1})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    wrong = client.post("/v1/things", json={"name": "a", "size": 1}, headers={"Authorization": "Bearer nope-nope"})
    assert wrong.status_code == 401


def test_write_with_token_passes_and_reads_need_none(client: TestClient) -> None:
    assert client.post("/v1/things", json={"name": "a", "size": 1}, headers=AUTH).status_code == 200
    assert client.get("/v1/things/x").status_code == 404


def test_validation_error_names_each_field_and_value(client: TestClient) -> None:
    response = client.post("/v1/things", json={"name": "", "size": -2}, headers=AUTH)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    fields = {f["field"]: f for f in body["details"]["fields"]}
    assert set(fields) == {"name", "size"}
    assert fields["size"]["value"] == -2
    assert "size" in body["message"] and "name" in body["message"]


def test_domain_error_and_unknown_route_are_json(client: TestClient) -> None:
    body = client.get("/v1/things/x").json()
    assert body == {"error": "not_found", "message": "no thing 'x'", "details": {"name": "x"}}
    assert client.get("/nowhere").json()["error"] == "not_found"


def test_unexpected_error_is_500_json_without_internals(client: TestClient) -> None:
    response = client.get("/v1/boom")
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    assert "secret internals" not in response.text


def test_readyz_names_redis_when_it_is_unreachable(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "not_ready"
    assert body["details"]["failing"] == ["redis"]
    assert client.get("/healthz").json() == {"status": "ok", "service": "ratelimit"}


def test_request_id_is_echoed(client: TestClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert response.headers["x-request-id"] == "abc123"


def test_metrics_expose_http_and_trader_series(client: TestClient) -> None:
    client.get("/v1/things/x")
    text = client.get("/metrics").text
    assert 'trader_service_info{service="ratelimit",trading_mode="sim"} 1.0' in text
    assert 'http_requests_total{handler="/v1/things/{name}",method="GET",status="404"}' in text


class Counting:
    """A request body that counts how much of it the server pulled."""

    def __init__(self, size: int):
        self.size = size
        self.sent = 0

    def __iter__(self) -> Iterator[bytes]:
        chunk = b"x" * 4096
        while self.sent < self.size:
            self.sent += len(chunk)
            yield chunk


def test_a_write_without_the_token_is_refused_before_its_body_is_read(client: TestClient) -> None:
    body = Counting(10 * 1024 * 1024)
    response = client.post("/v1/things", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert body.sent <= 4096 * 2


def test_a_body_over_the_cap_is_413_json(client: TestClient) -> None:
    declared = client.post("/v1/things", content=b"{" + b" " * 20_000 + b"}", headers=AUTH)
    assert declared.status_code == 413
    assert declared.json()["error"] == "body_too_large" and declared.json()["details"]["max_bytes"] == 16 * 1024
    streamed = client.post("/v1/things", content=Counting(200_000), headers=AUTH)  # chunked, no length given
    assert streamed.status_code == 413 and streamed.json()["error"] == "body_too_large"


def test_validation_errors_echo_huge_values_bounded(client: TestClient) -> None:
    json_auth = AUTH | {"Content-Type": "application/json"}
    huge_int = client.post("/v1/things", content=b'{"name": "a", "size": ' + b"9" * 30 + b"}", headers=json_auth)
    assert huge_int.status_code == 200  # a valid, if large, size: the model has no upper bound
    too_big = client.post("/v1/things", json={"name": "a", "size": -(2**70)}, headers=AUTH)
    assert too_big.status_code == 422
    assert too_big.json()["details"]["fields"][0] == {
        "field": "size",
        "message": "Input should be greater than 0",
        "value": str(-(2**70)),
    }
    long_name = client.post("/v1/things", json={"name": ["x" * 10_000], "size": 1}, headers=AUTH)
    assert long_name.status_code == 422
    assert len(long_name.text) < 1000 and "(10004 characters)" in long_name.text


def test_log_lines_written_for_a_request_carry_its_id(client: TestClient) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("test"))
    logging.getLogger().addHandler(handler)
    try:
        given = client.post("/v1/logged", headers=AUTH | {"X-Request-ID": "req-42"})
        made = client.post("/v1/logged", headers=AUTH)
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in out.getvalue().splitlines() if "handled a write" in line]
    assert [line["request_id"] for line in lines] == ["req-42", made.headers["x-request-id"]]
    assert given.headers["x-request-id"] == "req-42" and len(made.headers["x-request-id"]) == 16


def test_docs_are_served_without_internet(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assets = [part.split('"')[0] for part in page.text.split('src="')[1:] + page.text.split('href="')[1:]]
    local = [asset for asset in assets if asset.endswith((".js", ".css"))]
    assert local and all(asset.startswith("/") for asset in local), assets
    for asset in local:
        assert client.get(asset).status_code == 200, asset


async def test_a_dependency_check_remembers_a_success_for_its_max_age_and_asks_again_after_a_failure() -> None:
    calls: list[str] = []
    answers = iter([200, 200, 503, 200])

    def exchange(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(next(answers))

    now = [0.0]
    _, check = dependency_check("exchange", "http://exchange", "/time", max_age_s=30, clock=lambda: now[0])
    app = SimpleNamespace(state=SimpleNamespace(http=httpx.AsyncClient(transport=httpx.MockTransport(exchange))))
    await check(app)  # asked
    now[0] = 29.9
    await check(app)  # remembered
    assert calls == ["/time"]
    now[0] = 30.0
    await check(app)  # asked again
    now[0] = 61.0
    with pytest.raises(httpx.HTTPStatusError):
        await check(app)
    await check(app)  # a failure is not remembered: asked at once, and answers
    assert len(calls) == 4
    await app.state.http.aclose()
