"""Metric helpers shared by the services: the service info gauge and a fresh-registry default."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from shared.settings import ServiceSettings


def register_service_info(registry: CollectorRegistry, settings: ServiceSettings) -> None:
    """`trader_service_info{service,trading_mode} 1`, so dashboards can tell sim from live at a glance."""
    info = Gauge(
        "trader_service_info",
        "Constant 1, labelled with the service and its trading mode",
        ["service", "trading_mode"],
        registry=registry,
    )
    info.labels(settings.service_name, settings.trading_mode.value).set(1)
