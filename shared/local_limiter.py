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
    """Same rule as the service's script, at this process's share of each pool: the rate and burst divided by
    the number of client processes the service last saw drawing on the pool (`expected_replicas` until the
    service has said), so every process falling back at once stays together within the pool's limit.

    Pure logic: the caller passes the time and does any waiting.
    """

    config: RateLimitConfig
    clients: dict[str, int] = field(default_factory=dict)
    tat: dict[str, float] = field(default_factory=dict)
    blocked_until: dict[str, float] = field(default_factory=dict)

    def sharers(self, pool: str) -> int:
        return max(self.clients.get(pool, self.config.expected_replicas), 1)

    def interval(self, pool: str) -> float:
        share = self.config.effective_rate(self.config.pools[pool]) / self.sharers(pool)
        return 1.0 / share

    def burst(self, pool: str) -> int:
        return max(self.config.pools[pool].burst // self.sharers(pool), 1)

    def learn(self, clients: dict[str, int]) -> None:
        """Take the service's count of the processes drawing on each pool."""
        self.clients.update({pool: n for pool, n in clients.items() if pool in self.config.pools and n > 0})

    def decide(
        self, endpoint: str, *, cost: int, now: float, max_wait_s: float = 0.0, reserve: bool = True
    ) -> LocalDecision:
        """Grant (possibly `wait_s` ahead, as a reservation) or deny with the time to retry; all pools or none.

        As in the service, only critical requests (`reserve`) may hold a future slot; the others are granted
        now or told when to ask again, so they never push the schedule ahead of an order."""
        if not reserve:
            max_wait_s = 0.0
        pools = self.config.endpoints[endpoint].pools
        wait, worst_pool, worst = 0.0, None, 0.0
        for pool, weight in pools.items():
            burst = self.burst(pool)
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
