"""Executor service settings: the Platform contract plus `risk.yaml`."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.ratelimits import RateLimitConfig
from shared.settings import LatencyConfig, ServiceSettings


class RiskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    max_order_quote: float = Field(default=100, gt=0)
    max_position_quote: float = Field(default=250, gt=0)
    max_open_positions: int = Field(default=5, ge=1, le=1000)
    max_daily_loss_quote: float = Field(default=100, gt=0)
    max_trades_per_hour: int = Field(default=10, ge=1, le=10_000)
    max_total_quote: float = Field(default=1000, gt=0, description="open positions' cost together")
    cooldown_s: float = Field(default=900, ge=0, le=30 * 86_400, description="after an exit, before that product again")
    # A proposal's quote_size is scaled by its conviction: in full at full_size_conviction, never below
    # min_size_factor of it.
    full_size_conviction: float = Field(default=0.5, gt=0, le=1)
    min_size_factor: float = Field(default=0.5, gt=0, le=1)


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    claim_idle_s: float = Field(default=15, gt=0, le=3600, description="a proposal a worker left this long is claimed")
    monitor_interval_s: float = Field(default=2, gt=0, le=3600, description="how often open positions are checked")


class ExecutorSettings(ServiceSettings):
    service_name = "executor"
    default_port = 8004
    config_files = ("risk.yaml", "policy.yaml", "ratelimits.yaml")

    risk: RiskConfig
    worker: WorkerConfig = WorkerConfig()
    latency: LatencyConfig
    ratelimit: RateLimitConfig
