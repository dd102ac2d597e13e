"""Ratelimit service settings: the Platform contract plus `ratelimits.yaml`."""

from __future__ import annotations

from shared.ratelimits import RateLimitConfig
from shared.settings import ServiceSettings


class RatelimitSettings(ServiceSettings):
    service_name = "ratelimit"
    default_port = 8001
    config_files = ("ratelimits.yaml",)

    ratelimit: RateLimitConfig
