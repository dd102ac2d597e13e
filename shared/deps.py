"""Request dependencies every service uses: its settings, Redis and the inter-service HTTP client."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import Depends, Request
from redis.asyncio import Redis


def app_settings(request: Request) -> Any:
    """The service's validated settings (typed by each service's `SettingsDep`)."""
    return request.app.state.settings


def app_redis(request: Request) -> Redis:
    return request.app.state.redis


def app_http(request: Request) -> httpx.AsyncClient:
    return request.app.state.http


RedisDep = Annotated[Redis, Depends(app_redis)]
HttpDep = Annotated[httpx.AsyncClient, Depends(app_http)]
