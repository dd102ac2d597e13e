"""Universe service settings: the Platform contract plus `universe.yaml` and the latency budgets."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ratelimits import RateLimitConfig
from shared.settings import LatencyConfig, ServiceSettings

STABLECOINS = ["USDT", "USDC", "DAI", "GUSD", "PYUSD", "USDP", "PAX", "TUSD", "BUSD", "EURC", "FDUSD", "USDS"]


class AdaptiveTtl(BaseModel):
    """The product list's TTL from the market's volatility, measured on the list itself: the median absolute
    24h price change of the ranked products. At or below `calm_change_pct` the TTL is `max_minutes`, at or
    above `volatile_change_pct` it is `min_minutes`, and in between it moves linearly."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    min_minutes: float = Field(default=2, gt=0, le=1440)
    max_minutes: float = Field(default=15, gt=0, le=1440)
    calm_change_pct: float = Field(default=2, ge=0, le=100)
    volatile_change_pct: float = Field(default=8, gt=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> AdaptiveTtl:
        if self.min_minutes > self.max_minutes:
            raise ValueError(f"min_minutes ({self.min_minutes}) must not be above max_minutes ({self.max_minutes})")
        if self.calm_change_pct >= self.volatile_change_pct:
            raise ValueError(
                f"calm_change_pct ({self.calm_change_pct}) must be below volatile_change_pct "
                f"({self.volatile_change_pct})"
            )
        return self


class UniverseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    products_cache_minutes: int = Field(default=5, ge=0, le=1440, description="0 disables the cache")
    adaptive_ttl: AdaptiveTtl = AdaptiveTtl()
    quote_currencies: list[str] = Field(default=["USD", "USDC"], min_length=1)
    min_quote_volume_24h: float = Field(default=1_000_000, ge=0)
    max_products: int = Field(default=40, ge=1, le=1000)
    core_size: int = Field(default=10, ge=0, le=1000, description="the top products by volume form the core tier")
    max_spread_bps: float = Field(default=50, gt=0, le=10_000)
    min_price: float = Field(default=0, ge=0)
    stablecoins: list[str] = Field(default_factory=lambda: list(STABLECOINS))
    exclude_limit_only: bool = True
    exclude_post_only: bool = True
    min_listing_age_days: float = Field(default=0, ge=0, le=3650, description="0 keeps new listings")
    allow: list[str] = Field(default_factory=list, description="when set, only these products")
    deny: list[str] = Field(default_factory=list)
    refresh_interval_s: float = Field(default=60, gt=0, le=86_400)
    lock_timeout_s: float = Field(default=15, gt=0, le=600, description="a dead builder holds the lock this long")
    build_wait_s: float = Field(default=20, gt=0, le=600, description="how long a request waits for a build")

    @model_validator(mode="after")
    def _waiters_outlast_a_dead_holder(self) -> UniverseConfig:
        if self.build_wait_s <= self.lock_timeout_s:
            raise ValueError(
                f"build_wait_s ({self.build_wait_s:g}) must be above lock_timeout_s ({self.lock_timeout_s:g}), so "
                "the replicas waiting on a holder that died can take over before they give up"
            )
        return self


class UniverseSettings(ServiceSettings):
    service_name = "universe"
    default_port = 8002
    config_files = ("universe.yaml", "policy.yaml", "ratelimits.yaml")

    universe: UniverseConfig
    latency: LatencyConfig
    ratelimit: RateLimitConfig
