"""What the simulator saw: the referee of our rate limiting (GET /sim/stats and trader_sim_* metrics)."""

from __future__ import annotations

from collections import Counter as Tally
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram


class SimMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.requests = Counter(
            "trader_sim_requests_total",
            "Coinbase API calls served, by endpoint and HTTP status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.rate_limited = Counter(
            "trader_sim_rate_limited_total",
            "Calls refused with 429 because they broke Coinbase's limits",
            ["endpoint"],
            registry=registry,
        )
        self.orders = Counter(
            "trader_sim_orders_total",
            "Create-order calls by result (filled, open, rejected, repeated)",
            ["result"],
            registry=registry,
        )
        self.faults = Counter("trader_sim_faults_total", "Injected faults", ["fault"], registry=registry)
        self.latency = Histogram(
            "trader_sim_request_seconds", "Time to answer a Coinbase API call", ["endpoint"], registry=registry
        )
        self._requests: defaultdict[str, Tally[str]] = defaultdict(Tally)
        self._orders: Tally[str] = Tally()
        self._rejections: Tally[str] = Tally()

    def request(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        self._requests[endpoint]["requests"] += 1
        if status == 429:
            self.rate_limited.labels(endpoint).inc()
            self._requests[endpoint]["rate_limited"] += 1

    def order(self, result: str, reason: str | None = None) -> None:
        self.orders.labels(result).inc()
        self._orders[result] += 1
        if reason:
            self._rejections[reason] += 1

    def snapshot(self) -> dict[str, Any]:
        """GET /sim/stats."""
        return {
            "endpoints": {name: dict(tally) for name, tally in sorted(self._requests.items())},
            "requests": sum(t["requests"] for t in self._requests.values()),
            "rate_limited": sum(t["rate_limited"] for t in self._requests.values()),
            "orders": dict(self._orders),
            "rejections": dict(self._rejections),
            "repeated_client_order_ids": self._orders["repeated"],
        }
