"""Strategy dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.strategy.settings import StrategySettings
from shared.deps import app_settings

SettingsDep = Annotated[StrategySettings, Depends(app_settings)]
