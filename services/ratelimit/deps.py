"""Ratelimit dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.ratelimit.settings import RatelimitSettings
from shared.deps import app_settings

SettingsDep = Annotated[RatelimitSettings, Depends(app_settings)]
