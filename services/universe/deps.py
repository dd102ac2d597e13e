"""Universe dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.universe.settings import UniverseSettings
from shared.deps import app_settings

SettingsDep = Annotated[UniverseSettings, Depends(app_settings)]
