"""Executor routes."""

from __future__ import annotations

from fastapi import APIRouter

from services.executor.deps import SettingsDep
from services.executor.settings import LatencyConfig, RiskConfig

router = APIRouter(prefix="/v1", tags=["executor"])


@router.get("/config", summary="The validated risk limits in force (YAML plus environment)")
async def get_config(settings: SettingsDep) -> dict[str, RiskConfig | LatencyConfig]:
    return {"risk": settings.risk, "latency": settings.latency}
