"""The schema of `config/ratelimits.yaml`: pools, endpoints and priorities, shared by the service and its clients."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


class Priority(StrEnum):
    CRITICAL = "critical"
    NORMAL = "normal"
    BACKGROUND = "background"


# Most urgent first: a caller may ask for its endpoint's priority or a later one.
URGENCY = (Priority.CRITICAL, Priority.NORMAL, Priority.BACKGROUND)


class PoolLimit(BaseModel):
    """A shared budget: `rate` requests per second as the exchange states it, `burst` back to back."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    rate: float = Field(gt=0, le=1_000_000, description="requests per second (the exchange's figure)")
    burst: int = Field(ge=1, le=1_000_000, description="largest cost granted back to back")


class EndpointLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    priority: Priority = Priority.NORMAL
    pools: dict[Name, Annotated[int, Field(ge=1, le=1000)]] = Field(min_length=1)


class RateLimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    safety_margin_pct: float = Field(default=10, ge=0, lt=100)
    utilization_window_s: int = Field(default=10, ge=1, le=3600)
    background_max_utilization: float = Field(default=80, gt=0, le=100)
    normal_max_utilization: float = Field(default=95, gt=0, le=100)
    max_wait_ms_limit: int = Field(default=30_000, ge=0, le=600_000)
    expected_replicas: int = Field(default=1, ge=1, le=1000)
    client_ttl_s: int = Field(default=300, ge=1, le=86_400)
    pools: dict[Name, PoolLimit] = Field(min_length=1)
    endpoints: dict[Name, EndpointLimit] = Field(min_length=1)

    @model_validator(mode="after")
    def _endpoints_use_known_pools(self) -> RateLimitConfig:
        for name, endpoint in self.endpoints.items():
            unknown = sorted(set(endpoint.pools) - set(self.pools))
            if unknown:
                raise ValueError(
                    f"endpoint {name!r} draws from unknown pool(s) {unknown}; known pools: {sorted(self.pools)}"
                )
        if self.normal_max_utilization < self.background_max_utilization:
            raise ValueError(
                f"normal_max_utilization ({self.normal_max_utilization}) must not be below "
                f"background_max_utilization ({self.background_max_utilization})"
            )
        return self

    def max_utilization(self, priority: Priority) -> float:
        """The pool utilization (percent) above which a request of this priority is shed."""
        if priority is Priority.BACKGROUND:
            return self.background_max_utilization
        if priority is Priority.NORMAL:
            return self.normal_max_utilization
        return 100.0

    def priority_at_most(self, endpoint: str, cap: Priority) -> Priority:
        """The endpoint's configured priority, or `cap` where that is less urgent: never a raise, which the
        service refuses."""
        return max(self.endpoints[endpoint].priority, cap, key=URGENCY.index)

    def effective_rate(self, limit: PoolLimit) -> float:
        return limit.rate * (1 - self.safety_margin_pct / 100)
