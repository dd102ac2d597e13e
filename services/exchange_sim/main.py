"""Exchange simulator: a Coinbase Advanced Trade-compatible exchange, the stack's default."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.exchange_sim.api import router
from services.exchange_sim.settings import SimSettings
from shared.app import build_app
from shared.settings import load_settings


def create_app(settings: SimSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(SimSettings)
    return build_app(
        settings,
        description="Serves Coinbase Advanced Trade's REST paths and JSON shapes so the stack runs without keys.",
        routers=[router],
        registry=registry,
        protected=("/v1/", "/sim/"),
    )
