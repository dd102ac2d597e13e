"""The universe service's metrics (`trader_universe_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.universe.cache import RESULTS, Result

BUILD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class UniverseMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.cache_requests = Counter(
            "trader_universe_cache_requests_total",
            "Product-list requests of this replica by result: hit, miss, expired, stale (the last good list served "
            "because the exchange failed)",
            ["result"],
            registry=registry,
        )
        self.build_seconds = Histogram(
            "trader_universe_build_seconds",
            "Time to build the universe: product list (cached or fetched), filters, one best_bid_ask call",
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        self.size = Gauge("trader_universe_size", "Products in the universe by tier", ["tier"], registry=registry)
        self.products_age = Gauge(
            "trader_universe_products_age_seconds",
            "Age of the product list the universe was built from (read from Redis at scrape time)",
            registry=registry,
        )
        self.cache_ttl = Gauge(
            "trader_universe_cache_ttl_seconds",
            "TTL in force for the product list (fixed, or adaptive to volatility); 0 when the cache is disabled",
            registry=registry,
        )
        self.budget_exceeded = Counter(
            "trader_universe_stage_budget_exceeded_total",
            "Universe builds slower than latency.stage_budgets.universe_build",
            registry=registry,
        )
        self.excluded = Gauge(
            "trader_universe_excluded",
            "Products left out of the last build, by reason",
            ["reason"],
            registry=registry,
        )
        self.stale = Gauge(
            "trader_universe_stale",
            "1 while the universe is built from a stale product list or could not be rebuilt",
            registry=registry,
        )
        self._results = {result: self.cache_requests.labels(result) for result in RESULTS}

    def cache_result(self, result: Result) -> None:
        self._results[result].inc()
