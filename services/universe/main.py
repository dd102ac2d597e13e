"""Universe service: builds the tradable universe from the exchange's product list."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.universe.api import router
from services.universe.settings import UniverseSettings
from shared.app import EXCHANGE_TIME_PATH, build_app, dependency_check
from shared.settings import load_settings


def create_app(settings: UniverseSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(UniverseSettings)
    return build_app(
        settings,
        description="Builds the tradable universe from the exchange's product list, cached in Redis.",
        routers=[router],
        registry=registry,
        checks=[
            dependency_check("ratelimit", settings.ratelimit_url),
            dependency_check("exchange", settings.exchange_api_url, EXCHANGE_TIME_PATH),
        ],
    )
