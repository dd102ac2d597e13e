"""The ratelimit service's metrics (the design note's `trader_rate_limiter_*`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.ratelimit.gcra import Decision, PoolState
from shared.ratelimits import Priority, RateLimitConfig

NEAR_LIMIT_PCT = 80.0
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RatelimitMetrics:
    def __init__(self, registry: CollectorRegistry, config: RateLimitConfig):
        self.config = config
        self.utilization = Gauge(
            "trader_rate_limiter_utilization_pct",
            "Quota granted over quota available in the utilization window, 0-100; per endpoint, the highest of "
            "its pools. Read from Redis at scrape time, so every replica reports the global figure.",
            ["endpoint"],
            registry=registry,
        )
        self.pool_utilization = Gauge(
            "trader_rate_limiter_pool_utilization_pct",
            "Quota granted over quota available in the utilization window, 0-100, per pool (from Redis)",
            ["pool"],
            registry=registry,
        )
        self.requests = Counter(
            "trader_rate_limiter_requests_total",
            "Quota decisions made by this replica, by endpoint, priority and decision (granted, denied, shed)",
            ["endpoint", "priority", "decision"],
            registry=registry,
        )
        self.wait = Histogram(
            "trader_rate_limiter_wait_seconds",
            "How long granted requests waited for quota",
            ["endpoint"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self.near_limit = Counter(
            "trader_rate_limiter_near_limit_total",
            f"Decisions taken while a pool was above {NEAR_LIMIT_PCT:g}% utilization",
            ["pool"],
            registry=registry,
        )
        self.penalties = Counter(
            "trader_rate_limiter_penalties_total",
            "Exchange 429s reported by clients, each closing the pool until its retry time",
            ["pool"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "trader_rate_limiter_redis_errors_total",
            "Decisions that failed because Redis could not be reached (answered 503)",
            registry=registry,
        )
        # Label lookups cost more than the increments on the hot path; resolve each child once.
        self._requests = {
            (e, p.value, d): self.requests.labels(e, p.value, d)
            for e in config.endpoints
            for p in Priority
            for d in ("granted", "denied", "shed")
        }
        self._waits = {e: self.wait.labels(e) for e in config.endpoints}
        self._near = {p: self.near_limit.labels(p) for p in config.pools}

    def record(self, endpoint: str, priority: Priority, decision: str, waited_s: float, last: Decision) -> None:
        self._requests[(endpoint, priority.value, decision)].inc()
        if decision == "granted":
            self._waits[endpoint].observe(waited_s)
        for state in last.pools:
            if state.utilization_pct > NEAR_LIMIT_PCT:
                self._near[state.pool].inc()

    def set_utilization(self, pools: dict[str, PoolState]) -> None:
        for name, state in pools.items():
            self.pool_utilization.labels(name).set(state.utilization_pct)
        for endpoint, limit in self.config.endpoints.items():
            self.utilization.labels(endpoint).set(max(pools[p].utilization_pct for p in limit.pools))
