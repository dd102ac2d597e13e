"""Strategy service: turns market data into triggers and proposes trades above the conviction threshold."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.strategy.api import router
from services.strategy.settings import StrategySettings
from shared.app import EXCHANGE_TIME_PATH, build_app, dependency_check
from shared.settings import load_settings


def create_app(settings: StrategySettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(StrategySettings)
    return build_app(
        settings,
        description="Scores triggers' conviction and proposes trades at or above `min_conviction_to_propose`.",
        routers=[router],
        registry=registry,
        checks=[
            dependency_check("ratelimit", settings.ratelimit_url),
            dependency_check("universe", settings.universe_url),
            dependency_check("executor", settings.executor_url),
            dependency_check("exchange", settings.exchange_api_url, EXCHANGE_TIME_PATH),
        ],
    )
