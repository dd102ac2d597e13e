"""The quota decisions of the service: acquire (with server-side waiting), penalties, runtime limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from services.ratelimit.batcher import ScriptBatcher
from services.ratelimit.gcra import (
    ACQUIRE_LUA,
    PENALTY_LUA,
    REASONS,
    Code,
    Decision,
    EndpointPlan,
    PoolState,
    build_plans,
    parse_decision,
    pool_key,
    script_args,
)
from services.ratelimit.metrics import RatelimitMetrics
from shared.errors import InvalidRequest, NotFound, ServiceUnavailable
from shared.quota_models import AcquireDenied, AcquireGranted, AcquireIn, PoolQuota
from shared.ratelimits import EndpointLimit, Priority, RateLimitConfig
from shared.redis import KeySpace

Sleep = Callable[[float], Awaitable[None]]
PEEK = "__all_pools__"


class Limiter:
    def __init__(
        self,
        redis: Redis,
        config: RateLimitConfig,
        keys: KeySpace,
        metrics: RatelimitMetrics,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.redis = redis
        self.config = config
        self.keys = keys
        self.metrics = metrics
        self.sleep = sleep
        self.clock = clock
        self.plans = build_plans(config, keys)
        every_pool = EndpointLimit(priority=Priority.CRITICAL, pools=dict.fromkeys(config.pools, 1))
        self.peek_plan = build_plans(config.model_copy(update={"endpoints": {PEEK: every_pool}}), keys)[PEEK]
        self.acquire_script = ScriptBatcher(redis, ACQUIRE_LUA)
        self.penalty_script = ScriptBatcher(redis, PENALTY_LUA)

    def plan(self, endpoint: str) -> EndpointPlan:
        plan = self.plans.get(endpoint)
        if plan is None:
            raise NotFound(
                f"unknown endpoint {endpoint!r}; known endpoints: {', '.join(sorted(self.plans))}",
                details={"endpoint": endpoint, "known": sorted(self.plans)},
            )
        return plan

    @contextmanager
    def _redis_guard(self) -> Iterator[None]:
        """Redis outages become 503s (clients then fall back to their local limiter)."""
        try:
            yield
        except ResponseError:
            raise
        except (RedisError, OSError) as exc:
            self.metrics.redis_errors.inc()
            raise ServiceUnavailable(
                f"redis unreachable: {type(exc).__name__}; clients should use their local fallback",
                details={"component": "redis"},
            ) from exc

    def check_pool(self, pool: str) -> None:
        if pool not in self.config.pools:
            raise NotFound(
                f"unknown pool {pool!r}; known pools: {', '.join(sorted(self.config.pools))}",
                details={"pool": pool, "known": sorted(self.config.pools)},
            )

    async def _run(self, script: ScriptBatcher, keys: tuple[str, ...], args: list[str]) -> list[int]:
        with self._redis_guard():
            return await script.call(keys, args)

    async def decide(
        self, endpoint: str, *, cost: int, priority: Priority, max_wait_us: int = 0, now_us: int | None = None
    ) -> Decision:
        """One atomic decision across the endpoint's pools; a grant may be a reservation `wait_us` ahead."""
        plan = self.plan(endpoint)
        args = script_args(self.config, plan, cost=cost, priority=priority, max_wait_us=max_wait_us, now_us=now_us)
        return parse_decision(plan, await self._run(self.acquire_script, plan.keys, args))

    def validate(self, request: AcquireIn) -> Priority:
        self.plan(request.endpoint)
        endpoint = self.config.endpoints[request.endpoint]
        # The upper bound (a pool's burst) can change at runtime, so the script checks it.
        if request.cost <= 0:
            raise InvalidRequest(
                f"cost {request.cost} is out of range for {request.endpoint!r}: it must be at least 1",
                details={"field": "cost", "value": request.cost},
            )
        if request.max_wait_ms > self.config.max_wait_ms_limit:
            raise InvalidRequest(
                f"max_wait_ms {request.max_wait_ms} is above the limit of {self.config.max_wait_ms_limit}",
                details={"field": "max_wait_ms", "value": request.max_wait_ms, "max": self.config.max_wait_ms_limit},
            )
        return request.priority or endpoint.priority

    async def acquire(self, request: AcquireIn) -> AcquireGranted | AcquireDenied:
        """Grant now, or hold the caller until quota frees up (at most max_wait_ms), or deny with a retry time."""
        priority = self.validate(request)
        start = self.clock()
        budget_us = request.max_wait_ms * 1000
        while True:
            left_us = max(budget_us - int((self.clock() - start) * 1e6), 0)
            decision = await self.decide(request.endpoint, cost=request.cost, priority=priority, max_wait_us=left_us)
            if decision.code is Code.TOO_COSTLY:
                burst = next(p.burst for p in decision.pools if p.pool == decision.pool)
                raise InvalidRequest(
                    f"cost {request.cost} is out of range for {request.endpoint!r}: pool {decision.pool!r} "
                    f"has a burst of {burst}, so no request above it can ever be granted",
                    details={"field": "cost", "value": request.cost, "pool": decision.pool, "burst": burst},
                )
            if decision.granted:
                if decision.wait_us:
                    await self.sleep(decision.wait_us / 1e6)
                waited = self.clock() - start
                self.metrics.record(request.endpoint, priority, "granted", waited, decision)
                return AcquireGranted(
                    waited_ms=round(waited * 1000, 3),
                    remaining=decision.remaining,
                    utilization_pct=decision.utilization_pct,
                )
            # Shedding clears as old usage leaves the window, which no reservation can express: sleep, ask again.
            if decision.code is Code.SHED and 0 < decision.retry_after_us <= left_us:
                await self.sleep(decision.retry_after_us / 1e6)
                continue
            self.metrics.record(
                request.endpoint, priority, "shed" if decision.code is Code.SHED else "denied", 0.0, decision
            )
            return AcquireDenied(
                retry_after_ms=round(decision.retry_after_us / 1000, 3),
                reason=REASONS[decision.code],
                pool=decision.pool or "",
            )

    async def penalize(self, pools: list[str], retry_after_ms: int) -> dict[str, int]:
        """Close the pools for every client until now + retry_after_ms (never shortening a longer penalty)."""
        for pool in pools:
            self.check_pool(pool)
        keys = tuple(pool_key(self.keys, p) for p in pools)
        until = await self._run(self.penalty_script, keys, [str(retry_after_ms * 1000), ""])
        for pool in pools:
            self.metrics.penalties.labels(pool).inc()
        return {pool: value // 1000 for pool, value in zip(pools, until, strict=True)}

    async def peek(self) -> dict[str, PoolState]:
        """Every pool's utilization, remaining burst and penalty, without consuming anything."""
        args = script_args(self.config, self.peek_plan, cost=0, priority=Priority.CRITICAL, max_wait_us=0)
        decision = parse_decision(self.peek_plan, await self._run(self.acquire_script, self.peek_plan.keys, args))
        return {state.pool: state for state in decision.pools}

    async def quota(self, pool: str) -> PoolQuota:
        self.check_pool(pool)
        return self.describe(pool, (await self.peek())[pool])

    async def all_quotas(self) -> dict[str, PoolQuota]:
        states = await self.peek()
        return {pool: self.describe(pool, states[pool]) for pool in self.config.pools}

    def describe(self, pool: str, state: PoolState) -> PoolQuota:
        now_ms = int(time.time() * 1000)
        blocked_ms = state.blocked_until_us // 1000
        return PoolQuota(
            pool=pool,
            rate=state.rate,
            burst=state.burst,
            effective_rate=round(state.rate * (1 - self.config.safety_margin_pct / 100), 6),
            source="override" if state.overridden else "config",
            utilization_pct=state.utilization_pct,
            remaining=state.remaining,
            blocked_until_ms=blocked_ms if blocked_ms > now_ms else None,
        )

    async def set_limit(self, pool: str, *, rate: float, burst: int) -> PoolQuota:
        """Change a pool's limit for every replica; kept in Redis until cleared."""
        self.check_pool(pool)
        with self._redis_guard():
            await self.redis.hset(pool_key(self.keys, pool), mapping={"o_rate": repr(rate), "o_burst": str(burst)})
        return await self.quota(pool)

    async def clear_limit(self, pool: str) -> PoolQuota:
        """Go back to the pool's limit from ratelimits.yaml."""
        self.check_pool(pool)
        with self._redis_guard():
            await self.redis.hdel(pool_key(self.keys, pool), "o_rate", "o_burst")
        return await self.quota(pool)

    async def refresh_gauges(self) -> None:
        """Set the utilization gauges from Redis, so any replica reports the global figure."""
        self.metrics.set_utilization(await self.peek())
