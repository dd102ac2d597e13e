"""The trade proposal: the contract between the strategy, which makes it, and the executor, which acts on it."""

from __future__ import annotations

import math
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer, model_validator

# Fixed, so the same cycle, product and side give the same proposal_id in every process and release.
PROPOSAL_NAMESPACE = uuid.UUID("0b8f3c1e-5a7d-4f4e-9f0a-6d2c8e1b7a53")
MAX_COMPONENTS = 32
PRODUCT_ID_PATTERN = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$"


def _finite(components: dict[str, float]) -> dict[str, float]:
    for name, value in components.items():
        if not math.isfinite(value):
            raise ValueError(f"component {name!r} must be a finite number, got {value}")
    return components


def _positive(value: Decimal) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise ValueError(f"must be a positive decimal, got {value}")
    return value


QuoteSize = Annotated[
    Decimal,
    AfterValidator(_positive),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]
ComponentName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,40}$")]


def proposal_id(cycle_id: str, product_id: str, side: str) -> str:
    """The proposal's id from what it is about: a retried send of the same proposal carries the same id."""
    return str(uuid.uuid5(PROPOSAL_NAMESPACE, f"{cycle_id}|{product_id}|{side}"))


class Proposal(BaseModel):
    """A proposed trade with the conviction behind it and every component of that conviction."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    proposal_id: str = Field(min_length=1, max_length=64, description="deterministic for cycle, product and side")
    product_id: str = Field(pattern=PRODUCT_ID_PATTERN, examples=["BTC-USD"])
    side: Literal["BUY", "SELL"]
    conviction: float = Field(ge=0, le=1)
    components: Annotated[dict[ComponentName, float], AfterValidator(_finite)] = Field(
        max_length=MAX_COMPONENTS, description="what the conviction is made of: name -> value"
    )
    quote_size: QuoteSize = Field(description="in the quote currency, a decimal string: a hint the executor may reduce")
    stop_loss_pct: float = Field(gt=0, lt=100)
    take_profit_pct: float = Field(gt=0, le=1000)
    time_stop_s: int = Field(gt=0, le=30 * 86_400)
    created_at: AwareDatetime
    expires_at: AwareDatetime

    @model_validator(mode="after")
    def _expires_after_creation(self) -> Proposal:
        if self.expires_at <= self.created_at:
            raise ValueError(
                f"expires_at ({self.expires_at.isoformat()}) must be after created_at ({self.created_at.isoformat()})"
            )
        return self

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at
