"""Executor dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from services.executor.settings import ExecutorSettings
from shared.deps import app_settings

SettingsDep = Annotated[ExecutorSettings, Depends(app_settings)]
