"""Universe dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.universe.builder import UniverseBuilder
from services.universe.settings import UniverseSettings
from shared.deps import app_settings


def builder(request: Request) -> UniverseBuilder:
    return request.app.state.builder


SettingsDep = Annotated[UniverseSettings, Depends(app_settings)]
BuilderDep = Annotated[UniverseBuilder, Depends(builder)]
