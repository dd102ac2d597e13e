"""Strategy routes."""

from __future__ import annotations

from fastapi import APIRouter

from services.strategy.deps import SettingsDep
from services.strategy.settings import LatencyConfig, StrategyConfig

router = APIRouter(prefix="/v1", tags=["strategy"])


@router.get("/config", summary="The validated strategy policy in force (YAML plus environment)")
async def get_config(settings: SettingsDep) -> dict[str, StrategyConfig | LatencyConfig]:
    return {"strategy": settings.strategy, "latency": settings.latency}
