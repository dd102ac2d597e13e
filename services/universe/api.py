"""Universe routes."""

from __future__ import annotations

from fastapi import APIRouter

from services.universe.deps import SettingsDep
from services.universe.settings import LatencyConfig, UniverseConfig

router = APIRouter(prefix="/v1", tags=["universe"])


@router.get("/config", summary="The validated universe configuration in force (YAML plus environment)")
async def get_config(settings: SettingsDep) -> dict[str, UniverseConfig | LatencyConfig]:
    return {"universe": settings.universe, "latency": settings.latency}
