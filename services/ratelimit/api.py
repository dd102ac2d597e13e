"""Ratelimit routes."""

from __future__ import annotations

from fastapi import APIRouter

from services.ratelimit.deps import SettingsDep
from shared.ratelimits import RateLimitConfig

router = APIRouter(prefix="/v1", tags=["ratelimit"])


@router.get("/limits", summary="Pools, endpoints and priorities in force")
async def get_limits(settings: SettingsDep) -> RateLimitConfig:
    return settings.ratelimit
