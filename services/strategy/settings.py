"""Strategy service settings: the Platform contract plus `policy.yaml` (the design note's keys)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.exchange.models import Granularity
from shared.ratelimits import RateLimitConfig
from shared.settings import LatencyConfig, ServiceSettings

ProfileName = Literal["day_trader", "swing_trader", "conservative"]


class Profile(BaseModel):
    """A trading style: how sure a trigger must be, and how a proposal is sized and protected."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    min_conviction_to_propose: float = Field(ge=0, le=1)
    quote_size: float = Field(gt=0, description="quote currency per proposal, before the executor's limits")
    stop_loss_pct: float = Field(gt=0, lt=100)
    take_profit_pct: float = Field(gt=0, le=1000)
    time_stop_s: int = Field(gt=0, le=30 * 86_400)


PROFILES: dict[ProfileName, Profile] = {
    "day_trader": Profile(
        min_conviction_to_propose=0.25, quote_size=25, stop_loss_pct=1.5, take_profit_pct=3, time_stop_s=4 * 3600
    ),
    "swing_trader": Profile(
        min_conviction_to_propose=0.34, quote_size=50, stop_loss_pct=4, take_profit_pct=8, time_stop_s=3 * 86_400
    ),
    "conservative": Profile(
        min_conviction_to_propose=0.40, quote_size=20, stop_loss_pct=2, take_profit_pct=4, time_stop_s=86_400
    ),
}


class SignalParams(BaseModel):
    """How each signal reads the candles (bars of `strategy.granularity`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    momentum_bars: int = Field(default=12, ge=2, le=200)
    momentum_volatility_bars: int = Field(default=48, ge=5, le=299)
    momentum_z: float = Field(default=2.5, gt=0, le=20)
    breakout_bars: int = Field(default=24, ge=2, le=299)
    breakout_volume_ratio: float = Field(default=1.5, gt=0, le=100)
    volume_bars: int = Field(default=48, ge=5, le=299)
    volume_z: float = Field(default=4.0, gt=0, le=50)
    rsi_bars: int = Field(default=14, ge=2, le=200)
    rsi_low: float = Field(default=15, gt=0, lt=50)
    rsi_high: float = Field(default=85, gt=50, lt=100)
    trend_bars_per_step: int = Field(default=12, ge=2, le=100, description="bars per higher-timeframe bar")
    trend_steps: int = Field(default=12, ge=3, le=100, description="higher-timeframe bars the trend reads")


class ConvictionWeights(BaseModel):
    """Conviction = the weighted sum of its components (each 0..1); the weights are non-negative and sum to 1,
    so conviction is 0..1 and never falls when a component rises."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    strength: float = Field(default=0.45, ge=0, le=1)
    agreement: float = Field(default=0.3, ge=0, le=1)
    trend: float = Field(default=0.2, ge=0, le=1)
    liquidity: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> ConvictionWeights:
        total = self.strength + self.agreement + self.trend + self.liquidity
        if abs(total - 1) > 1e-9:
            raise ValueError(f"the conviction weights add up to {total:g}; they must add up to 1")
        return self


class DynamicConviction(BaseModel):
    """Opt-in: every `every_trades` closed trades, tighten the threshold by `step` when the win rate is below
    `tighten_below`, loosen it when above `loosen_above`, never outside [floor, ceiling]."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    enabled: bool = False
    every_trades: int = Field(default=10, ge=1, le=10_000)
    step: float = Field(default=0.01, gt=0, le=0.2)
    tighten_below: float = Field(default=0.40, ge=0, le=1)
    loosen_above: float = Field(default=0.60, ge=0, le=1)
    floor: float = Field(default=0.20, ge=0, le=1)
    ceiling: float = Field(default=0.45, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> DynamicConviction:
        if self.floor > self.ceiling:
            raise ValueError(f"floor ({self.floor}) must not be above ceiling ({self.ceiling})")
        if self.tighten_below > self.loosen_above:
            raise ValueError(
                f"tighten_below ({self.tighten_below}) must not be above loosen_above ({self.loosen_above})"
            )
        return self


class StrategyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    profile: ProfileName = "day_trader"
    # When set, overrides the profile's threshold (the design note's 0.28).
    min_conviction_to_propose: float | None = Field(default=None, ge=0, le=1)
    # When set, each overrides the profile's own exit.
    stop_loss_pct: float | None = Field(default=None, gt=0, lt=100)
    take_profit_pct: float | None = Field(default=None, gt=0, le=1000)
    time_stop_s: int | None = Field(default=None, gt=0, le=30 * 86_400)
    cycle_interval_s: float = Field(default=60, gt=0, le=86_400)
    granularity: Granularity = Granularity.FIVE_MINUTE
    lookback: int = Field(default=300, ge=50, le=349)
    signals: SignalParams = SignalParams()
    weights: ConvictionWeights = ConvictionWeights()
    dynamic_conviction: DynamicConviction = DynamicConviction()
    # Liquidity (a conviction component): half from the spread (1 at zero, 0 at this many bps or wider), half
    # from the 24h quote volume (1 at this volume or more, on a log scale down to 0 at a thousandth of it).
    liquidity_max_spread_bps: float = Field(default=50, gt=0, le=10_000)
    liquidity_full_volume: float = Field(default=100_000_000, gt=0)
    proposal_ttl_s: float = Field(default=120, gt=0, le=86_400, description="how long a proposal stays valid")
    history_cycles: int = Field(default=288, ge=1, le=10_000, description="cycles of triggers kept for the sweep")

    @property
    def profile_settings(self) -> Profile:
        """The profile with the exits this config overrides."""
        exits = ("stop_loss_pct", "take_profit_pct", "time_stop_s")
        overrides = {name: value for name in exits if (value := getattr(self, name)) is not None}
        return PROFILES[self.profile].model_copy(update=overrides)

    @property
    def threshold(self) -> float:
        """The conviction a trigger needs: the override when set, else the profile's."""
        if self.min_conviction_to_propose is not None:
            return self.min_conviction_to_propose
        return self.profile_settings.min_conviction_to_propose


class StrategySettings(ServiceSettings):
    service_name = "strategy"
    default_port = 8003
    config_files = ("policy.yaml", "ratelimits.yaml")

    strategy: StrategyConfig
    latency: LatencyConfig
    ratelimit: RateLimitConfig
