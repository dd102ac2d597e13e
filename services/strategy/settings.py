"""Strategy service settings: the Platform contract plus `policy.yaml`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.ratelimits import RateLimitConfig
from shared.settings import LatencyConfig, ServiceSettings


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_conviction_to_propose: float = Field(default=0.28, ge=0, le=1)
    cycle_interval_s: float = Field(default=60, gt=0, le=86_400)


class StrategySettings(ServiceSettings):
    service_name = "strategy"
    default_port = 8003
    config_files = ("policy.yaml", "ratelimits.yaml")

    strategy: StrategyConfig
    latency: LatencyConfig
    ratelimit: RateLimitConfig
