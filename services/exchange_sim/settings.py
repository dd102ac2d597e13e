"""Exchange simulator settings: the Platform contract plus `exchange_sim.yaml`."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.settings import ServiceSettings


class Fees(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    maker_pct: Decimal = Field(default=Decimal("0.4"), ge=0, le=10)
    taker_pct: Decimal = Field(default=Decimal("0.6"), ge=0, le=10)


class SimRateLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    public_per_s: int = Field(default=10, ge=1, le=100_000)
    private_per_s: int = Field(default=30, ge=1, le=100_000)


class Faults(BaseModel):
    """Failures the simulator injects into /api/v3 calls, for testing clients."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(default=0, ge=0, le=60_000)
    latency_jitter_ms: float = Field(default=0, ge=0, le=60_000)
    error_5xx_fraction: float = Field(default=0, ge=0, le=1)
    timeout_fraction: float = Field(default=0, ge=0, le=1)
    html_429_fraction: float = Field(default=0, ge=0, le=1)
    malformed_json_fraction: float = Field(default=0, ge=0, le=1)

    @model_validator(mode="after")
    def _fractions_fit(self) -> Faults:
        total = self.error_5xx_fraction + self.timeout_fraction + self.html_429_fraction + self.malformed_json_fraction
        if total > 1:
            raise ValueError(f"the fault fractions add up to {total:g}; at most 1 of the calls can fail")
        return self


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    products: int = Field(default=300, ge=10, le=1000)
    history_days: int = Field(default=30, ge=1, le=365)
    fees: Fees = Fees()
    starting_balances: dict[str, Annotated[Decimal, Field(ge=0)]] = Field(
        default_factory=lambda: {"USD": Decimal(10_000)}
    )
    rate_limits: SimRateLimits = SimRateLimits()
    jwt_public_key: str | None = None
    reject_replayed_jwt: bool = True
    faults: Faults = Faults()

    @field_validator("starting_balances")
    @classmethod
    def _currency_codes(cls, balances: dict[str, Decimal]) -> dict[str, Decimal]:
        """Upper-case codes: the environment's names are case-insensitive, so EXCHANGE_SIM__STARTING_BALANCES__BTC
        arrives as `btc` and must replace BTC, not sit beside it."""
        merged: dict[str, Decimal] = {}
        for code, amount in balances.items():
            merged[code.upper()] = amount
        return merged


class SimSettings(ServiceSettings):
    service_name = "exchange_sim"
    default_port = 8010
    config_files = ("exchange_sim.yaml",)

    sim_speed: float = Field(default=1.0, gt=0, le=10_000)
    sim_seed: int = Field(default=42, ge=0)
    exchange_sim: SimConfig
