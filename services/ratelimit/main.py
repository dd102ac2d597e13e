"""Ratelimit service: hands out exchange API quota per endpoint to every service and replica."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ratelimit.api import router
from services.ratelimit.settings import RatelimitSettings
from shared.app import build_app
from shared.settings import load_settings


def create_app(settings: RatelimitSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(RatelimitSettings)
    return build_app(
        settings,
        description="The single source of exchange API quota, shared through Redis by every replica.",
        routers=[router],
        registry=registry,
    )
