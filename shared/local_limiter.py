"""An in-process GCRA over linked pools: the quota client's fallback when the ratelimit service is out of reach."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.ratelimits import RateLimitConfig


@dataclass(frozen=True, slots=True)
class LocalDecision:
    granted: bool
    wait_s: float
    retry_after_s: float
    pool: str | None


@dataclass
class LocalLimiter:
    """Same rule as the service's script, at rate / expected_replicas, so N replicas together stay in budget.

    Pure logic: the caller passes the time and does any waiting.
    """

    config: RateLimitConfig
    tat: dict[str, float] = field(default_factory=dict)
    blocked_until: dict[str, float] = field(default_factory=dict)

    def interval(self, pool: str) -> float:
        limit = self.config.pools[pool]
        share = self.config.effective_rate(limit) / self.config.expected_replicas
        return 1.0 / share

    def decide(self, endpoint: str, *, cost: int, now: float, max_wait_s: float = 0.0) -> LocalDecision:
        """Grant (possibly `wait_s` ahead, as a reservation) or deny with the time to retry; all pools or none."""
        pools = self.config.endpoints[endpoint].pools
        wait, worst_pool, worst = 0.0, None, 0.0
        for pool, weight in pools.items():
            burst = self.config.pools[pool].burst
            interval = self.interval(pool)
            tat = max(self.tat.get(pool, now), now)
            need = max(tat + cost * weight * interval - now - burst * interval, self.blocked_until.get(pool, 0) - now)
            if need > max_wait_s and need > worst:
                worst_pool, worst = pool, need
            wait = max(wait, need)
        if worst_pool is not None:
            return LocalDecision(False, 0.0, worst, worst_pool)
        at = now + wait
        for pool, weight in pools.items():
            self.tat[pool] = max(self.tat.get(pool, at), at) + cost * weight * self.interval(pool)
        return LocalDecision(True, wait, 0.0, None)

    def penalize(self, pool: str, *, until: float) -> None:
        self.blocked_until[pool] = max(self.blocked_until.get(pool, 0.0), until)
