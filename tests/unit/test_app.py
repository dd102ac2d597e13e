"""The shared app factory: JSON errors, token on writes, health and metrics endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import APIRouter
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field

from services.ratelimit.settings import RatelimitSettings
from shared.app import build_app
from shared.errors import NotFound
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
