"""Strategy dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.strategy.cycle import CycleRunner
from services.strategy.settings import StrategySettings
from shared.deps import app_settings


def runner(request: Request) -> CycleRunner:
    return request.app.state.runner


SettingsDep = Annotated[StrategySettings, Depends(app_settings)]
RunnerDep = Annotated[CycleRunner, Depends(runner)]
