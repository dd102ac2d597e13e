"""Request dependencies every service uses."""

from __future__ import annotations

from typing import Any

from fastapi import Request


def app_settings(request: Request) -> Any:
    """The service's validated settings (typed by each service's `SettingsDep`)."""
    return request.app.state.settings
