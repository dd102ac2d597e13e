"""The proposal contract between strategy and executor: ids, bounds, unknown fields, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.proposal import Proposal, proposal_id

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def body(**fields: Any) -> dict[str, Any]:
    return {
        "proposal_id": proposal_id("cycle-1", "BTC-USD", "BUY"),
        "product_id": "BTC-USD",
        "side": "BUY",
        "conviction": 0.31,
        "components": {"strength": 0.6, "agreement": 0.5, "trend": 1.0, "liquidity": 0.9},
        "quote_size": "25.00",
        "stop_loss_pct": 2.0,
        "take_profit_pct": 4.0,
        "time_stop_s": 3600,
        "created_at": NOW.isoformat(),
        "expires_at": (NOW + timedelta(seconds=120)).isoformat(),
        **fields,
    }


def test_the_id_is_the_same_for_the_same_cycle_product_and_side() -> None:
    assert proposal_id("c1", "BTC-USD", "BUY") == proposal_id("c1", "BTC-USD", "BUY")
    assert (
        len(
            {
                proposal_id("c1", "BTC-USD", "BUY"),
                proposal_id("c2", "BTC-USD", "BUY"),
                proposal_id("c1", "ETH-USD", "BUY"),
                proposal_id("c1", "BTC-USD", "SELL"),
            }
        )
        == 4
    )


def test_a_proposal_round_trips_as_json_with_decimal_strings() -> None:
    proposal = Proposal.model_validate(body())
    wire = proposal.model_dump(mode="json")
    assert wire["quote_size"] == "25.00" and Proposal.model_validate(wire) == proposal
    assert proposal.quote_size == Decimal("25.00")
    assert not proposal.expired(NOW) and proposal.expired(NOW + timedelta(seconds=120))


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"surprise": 1}, "surprise"),
        ({"conviction": 1.2}, "conviction"),
        ({"side": "HOLD"}, "side"),
        ({"quote_size": "-5"}, "quote_size"),
        ({"quote_size": "NaN"}, "quote_size"),
        ({"components": {"strength": float("inf")}}, "components"),
        ({"components": {"Bad Name": 1.0}}, "components"),
        ({"product_id": "btc_usd"}, "product_id"),
        ({"created_at": "2026-11-30T12:00:00"}, "created_at"),
        ({"expires_at": NOW.isoformat()}, "expires_at"),
    ],
)
def test_bad_fields_are_refused_naming_the_field(fields: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Proposal.model_validate(body(**fields))
    assert where in str(refused.value)
