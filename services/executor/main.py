"""Executor service: risk checks, orders, positions, exits and PnL."""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.executor.api import router
from services.executor.settings import ExecutorSettings
from shared.app import EXCHANGE_TIME_PATH, build_app, dependency_check
from shared.settings import load_settings


def create_app(settings: ExecutorSettings | None = None, registry: CollectorRegistry | None = None) -> FastAPI:
    settings = settings or load_settings(ExecutorSettings)
    return build_app(
        settings,
        description="Checks risk, places orders, tracks positions, exits and PnL.",
        routers=[router],
        registry=registry,
        checks=[
            dependency_check("ratelimit", settings.ratelimit_url),
            dependency_check("exchange", settings.exchange_api_url, EXCHANGE_TIME_PATH),
        ],
    )
