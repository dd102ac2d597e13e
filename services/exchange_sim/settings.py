"""Exchange simulator settings."""

from __future__ import annotations

from shared.settings import ServiceSettings


class SimSettings(ServiceSettings):
    service_name = "exchange_sim"
    default_port = 8010
