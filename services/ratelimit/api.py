"""Ratelimit routes: acquire quota, report exchange 429s, read and change limits."""

from __future__ import annotations

import math

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.ratelimit.deps import LimiterDep
from shared.quota_models import (
    AcquireDenied,
    AcquireGranted,
    AcquireIn,
    EndpointInfo,
    LimitIn,
    LimitsOut,
    PenaltyIn,
    PenaltyOut,
    PoolQuota,
)
from shared.ratelimits import Priority

router = APIRouter(prefix="/v1", tags=["ratelimit"])


def denied_response(denied: AcquireDenied) -> JSONResponse:
    return JSONResponse(
        denied.model_dump(),
        status_code=429,
        headers={"Retry-After": str(max(1, math.ceil(denied.retry_after_ms / 1000)))},
    )


@router.post(
    "/acquire",
    summary="Take quota for one exchange call",
    response_model=AcquireGranted,
    responses={429: {"model": AcquireDenied, "description": "Not granted; retry after retry_after_ms"}},
)
async def acquire(body: AcquireIn, limiter: LimiterDep) -> AcquireGranted | JSONResponse:
    result = await limiter.acquire(body)
    if isinstance(result, AcquireDenied):
        return denied_response(result)
    return result


@router.post("/penalty", summary="Report an exchange 429: close the pool for every client until retry_after_ms")
async def penalty(body: PenaltyIn, limiter: LimiterDep) -> PenaltyOut:
    pools = [body.pool] if body.pool else list(limiter.plan(body.endpoint or "").pools)
    return PenaltyOut(blocked_until_ms=await limiter.penalize(pools, body.retry_after_ms))


@router.get("/limits", summary="Pools (with runtime overrides and live usage), endpoints and priorities")
async def get_limits(limiter: LimiterDep) -> LimitsOut:
    config = limiter.config
    return LimitsOut(
        safety_margin_pct=config.safety_margin_pct,
        utilization_window_s=config.utilization_window_s,
        max_utilization_pct={p: config.max_utilization(p) for p in Priority},
        pools=await limiter.all_quotas(),
        endpoints={
            name: EndpointInfo(priority=e.priority, pools=dict(e.pools)) for name, e in config.endpoints.items()
        },
    )


@router.put("/limits/{pool}", summary="Change a pool's rate and burst at runtime, for every replica")
async def put_limit(pool: str, body: LimitIn, limiter: LimiterDep) -> PoolQuota:
    return await limiter.set_limit(pool, rate=body.rate, burst=body.burst)


@router.delete("/limits/{pool}", summary="Drop a runtime change: back to ratelimits.yaml")
async def delete_limit(pool: str, limiter: LimiterDep) -> PoolQuota:
    return await limiter.clear_limit(pool)


@router.get("/quota/{pool}", summary="A pool's rate, burst, utilization, remaining burst and penalty")
async def get_quota(pool: str, limiter: LimiterDep) -> PoolQuota:
    return await limiter.quota(pool)
