"""Runs a service the same way everywhere (Procfile, container, tests): `python -m services.<name>`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp

from shared.errors import ConfigError
from shared.logging import configure_logging
from shared.settings import ServiceSettings, load_settings

# Longer than any client of the stack keeps an idle connection (30 s), so a client never sends a request on
# a connection the server is closing at that moment (uvicorn's default is 5 s).
KEEP_ALIVE_S = 75


class _Server(uvicorn.Server):
    """Marks the app as draining on SIGTERM/SIGINT so /readyz turns 503 while it shuts down."""

    def __init__(self, config: uvicorn.Config, app: FastAPI):
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._app.state.draining = True
        super().handle_exit(sig, frame)


def run_service(
    settings_cls: type[ServiceSettings],
    create_app: Callable[[Any], FastAPI],
    front: Callable[[FastAPI], ASGIApp] | None = None,
) -> None:
    """Load and validate settings (exit 2 with one line on error), then serve with one uvicorn worker.

    `front` wraps the app in a bare-ASGI layer for a route too hot for FastAPI's stack.
    """
    try:
        settings = load_settings(settings_cls)
        app = create_app(settings)
    except ConfigError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.service_name, settings.log_level)
    config = uvicorn.Config(
        front(app) if front else app,
        host=settings.bind_host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=KEEP_ALIVE_S,
        backlog=4096,
        # No proxy in front of the services; parsing forwarded headers costs on every request.
        proxy_headers=False,
    )
    _Server(config, app).run()
