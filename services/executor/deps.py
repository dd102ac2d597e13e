"""Executor dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.executor.orders import Executor
from services.executor.settings import ExecutorSettings
from shared.deps import app_settings


def executor(request: Request) -> Executor:
    return request.app.state.executor


SettingsDep = Annotated[ExecutorSettings, Depends(app_settings)]
ExecutorDep = Annotated[Executor, Depends(executor)]
