"""Ratelimit dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.ratelimit.limiter import Limiter
from services.ratelimit.settings import RatelimitSettings
from shared.deps import app_settings


def app_limiter(request: Request) -> Limiter:
    return request.app.state.limiter


SettingsDep = Annotated[RatelimitSettings, Depends(app_settings)]
LimiterDep = Annotated[Limiter, Depends(app_limiter)]
