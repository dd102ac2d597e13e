"""Prometheus metrics of the exchange client, on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ExchangeMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "trader_exchange_requests_total",
            "HTTP requests to the exchange, by quota endpoint and HTTP status (or 'error' when none came back)",
            ["endpoint", "status"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            "trader_exchange_request_seconds",
            "Duration of one HTTP request to the exchange",
            ["endpoint"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "trader_exchange_rate_limited_total",
            "429 answers from the exchange",
            ["endpoint"],
            registry=registry,
        )

    def observe(self, endpoint: str, status: int | str, seconds: float) -> None:
        """Count one request and its duration."""
        self.requests.labels(endpoint, str(status)).inc()
        self.request_seconds.labels(endpoint).observe(seconds)
