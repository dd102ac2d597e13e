"""Universe service settings: the Platform contract plus `universe.yaml` and the latency budgets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.ratelimits import RateLimitConfig
from shared.settings import LatencyConfig, ServiceSettings


class UniverseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products_cache_minutes: int = Field(default=5, ge=0, le=1440, description="0 disables the cache")
    quote_currencies: list[str] = Field(default=["USD", "USDC"], min_length=1)
    min_quote_volume_24h: float = Field(default=1_000_000, ge=0)
    max_products: int = Field(default=40, ge=1, le=1000)
    refresh_interval_s: float = Field(default=60, gt=0, le=86_400)


class UniverseSettings(ServiceSettings):
    service_name = "universe"
    default_port = 8002
    config_files = ("universe.yaml", "policy.yaml", "ratelimits.yaml")

    universe: UniverseConfig
    latency: LatencyConfig
    ratelimit: RateLimitConfig
