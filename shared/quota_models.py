"""The ratelimit service's request and response bodies, shared with the quota client."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.ratelimits import Name, Priority

DenyReason = Literal["limit", "shed", "penalty"]


class AcquireIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    endpoint: Name
    cost: int = Field(
        default=1, le=1_000_000, description="units to take; at least 1, at most the endpoint's tightest burst"
    )
    priority: Priority | None = Field(
        default=None, description="defaults to the endpoint's configured priority; may lower it, never raise it"
    )
    max_wait_ms: int = Field(
        default=0, ge=0, le=600_000, description="how long the service may hold the request for quota"
    )
    client_id: str = Field(
        default="",
        max_length=128,
        description="the calling process; the service counts the processes drawing on each pool",
    )


class AcquireGranted(BaseModel):
    granted: Literal[True] = True
    waited_ms: float
    remaining: int = Field(description="cost that could still be granted at once")
    utilization_pct: float = Field(description="highest utilization among the endpoint's pools after this grant")
    clients: dict[str, int] = Field(
        default_factory=dict,
        description="client processes that drew on each of the endpoint's pools lately: a client's fallback share",
    )


class AcquireDenied(BaseModel):
    granted: Literal[False] = False
    retry_after_ms: float
    reason: DenyReason
    pool: str


class PenaltyIn(BaseModel):
    """An exchange 429: close a pool (or every pool of an endpoint) for everyone until retry_after_ms."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    pool: Name | None = None
    endpoint: Name | None = None
    retry_after_ms: int = Field(gt=0, le=3_600_000)

    @model_validator(mode="after")
    def _one_target(self) -> PenaltyIn:
        if (self.pool is None) == (self.endpoint is None):
            raise ValueError("give exactly one of pool or endpoint")
        return self


class PenaltyOut(BaseModel):
    blocked_until_ms: dict[str, int]


class LimitIn(BaseModel):
    """A pool's limit as the exchange states it; the safety margin still applies."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rate: float = Field(gt=0, le=1_000_000)
    burst: int = Field(ge=1, le=1_000_000)


class PoolQuota(BaseModel):
    pool: str
    rate: float = Field(description="requests per second, the exchange's figure")
    burst: int
    effective_rate: float = Field(description="rate after the safety margin")
    source: Literal["config", "override"]
    utilization_pct: float
    remaining: int
    blocked_until_ms: int | None
    clients: int = Field(description="client processes that drew on the pool in the last client_ttl_s")


class EndpointInfo(BaseModel):
    priority: Priority
    pools: dict[str, int]


class LimitsOut(BaseModel):
    safety_margin_pct: float
    utilization_window_s: int
    max_utilization_pct: dict[Priority, float]
    pools: dict[str, PoolQuota]
    endpoints: dict[str, EndpointInfo]
