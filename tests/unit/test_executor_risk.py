"""Each of the executor's risk rules at its boundary."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.executor.risk import Approved, Book, Rejected, assess, sized
from services.executor.settings import RiskConfig
from shared.exchange.models import Product
from shared.proposal import Proposal, proposal_id

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
T = NOW.timestamp()
CONFIG = RiskConfig(
    max_order_quote=100,
    max_position_quote=250,
    max_open_positions=2,
    max_daily_loss_quote=100,
    max_trades_per_hour=10,
    max_total_quote=400,
    cooldown_s=900,
    full_size_conviction=0.5,
    min_size_factor=0.5,
)
BTC = Product.model_validate(
    {
        "product_id": "BTC-USD",
        "status": "online",
        "quote_currency_id": "USD",
        "base_currency_id": "BTC",
        "quote_increment": "0.01",
        "base_increment": "0.00000001",
        "quote_min_size": "1",
        "base_min_size": "0.00001",
    }
)
BOOK = Book(available={"USD": Decimal(10_000)})


def proposal(side: str = "BUY", conviction: float = 0.5, quote_size: str = "80", **fields: Any) -> Proposal:
    return Proposal(
        proposal_id=proposal_id("c1", "BTC-USD", side),
        product_id="BTC-USD",
        side=side,  # type: ignore[arg-type]
        conviction=conviction,
        components={"strength": 0.5},
        quote_size=Decimal(quote_size),
        stop_loss_pct=2,
        take_profit_pct=4,
        time_stop_s=3600,
        created_at=NOW - timedelta(seconds=10),
        expires_at=fields.pop("expires_at", NOW + timedelta(seconds=60)),
        **fields,
    )


def check(p: Proposal, book: Book = BOOK, product: Product | None = BTC, now: float = T) -> Approved | Rejected:
    return assess(p, book=book, product=product, config=CONFIG, now=now)


def reason(result: Approved | Rejected) -> str:
    return result.reason if isinstance(result, Rejected) else "approved"


def test_a_plain_buy_is_sized_by_conviction() -> None:
    assert check(proposal(conviction=0.5)) == Approved("BUY", Decimal("80.00"), None, None)
    assert check(proposal(conviction=0.3)) == Approved("BUY", Decimal("48.00"), None, None)  # 0.3 / 0.5 of it
    assert sized(proposal(conviction=0.1), CONFIG) == Decimal("40")  # never below half


def test_expiry_at_its_boundary() -> None:
    p = proposal(expires_at=NOW)
    assert reason(check(p, now=T - 0.001)) == "approved"
    assert reason(check(p, now=T)) == "expired"


def test_trades_per_hour_at_its_boundary() -> None:
    assert reason(check(proposal(), replace(BOOK, trades_last_hour=9))) == "approved"
    assert reason(check(proposal(), replace(BOOK, trades_last_hour=10))) == "max_trades_per_hour"


def test_open_positions_at_its_boundary() -> None:
    one = replace(BOOK, positions_quote={"ETH-USD": Decimal(10)})
    two = replace(BOOK, positions_quote={"ETH-USD": Decimal(10), "SOL-USD": Decimal(10)})
    assert reason(check(proposal(), one)) == "approved"
    assert reason(check(proposal(), two)) == "max_open_positions"
    adding = replace(two, positions_quote={"BTC-USD": Decimal(10), "SOL-USD": Decimal(10)})
    assert reason(check(proposal(), adding)) == "approved"  # adding to an open position opens none


def test_cooldown_after_an_exit_at_its_boundary() -> None:
    book = replace(BOOK, last_exit_at={"BTC-USD": T - 900})
    assert reason(check(proposal(), book)) == "approved"
    assert reason(check(proposal(), book, now=T - 0.5)) == "cooldown"


@pytest.mark.parametrize(
    ("book", "size", "capped_by"),
    [
        (BOOK, "100.00", "max_order_quote"),
        (replace(BOOK, positions_quote={"BTC-USD": Decimal(200)}), "50.00", "max_position_quote"),
        (replace(BOOK, positions_quote={"ETH-USD": Decimal(330)}), "70.00", "max_total_quote"),
        (Book(available={"USD": Decimal("12.345")}), "12.34", "insufficient_balance"),
    ],
)
def test_limits_reduce_the_size_and_name_themselves(book: Book, size: str, capped_by: str) -> None:
    assert check(proposal(quote_size="500"), book) == Approved("BUY", Decimal(size), None, capped_by)


@pytest.mark.parametrize(
    ("book", "expected"),
    [
        (replace(BOOK, positions_quote={"BTC-USD": Decimal("249.5")}), "max_position_quote"),
        (replace(BOOK, positions_quote={"ETH-USD": Decimal("399.5")}), "max_total_quote"),
        (Book(available={"USD": Decimal("0.99")}), "insufficient_balance"),
    ],
)
def test_a_limit_that_leaves_less_than_the_minimum_rejects(book: Book, expected: str) -> None:
    assert reason(check(proposal(), book)) == expected


def test_below_the_products_minimum() -> None:
    small = BTC.model_copy(update={"quote_min_size": Decimal(50)})
    assert reason(check(proposal(quote_size="60", conviction=0.5), product=small)) == "approved"
    assert reason(check(proposal(quote_size="60", conviction=0.3), product=small)) == "below_min_size"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"trading_disabled": True}, "trading_disabled"),
        ({"status": "offline"}, "trading_disabled"),
        ({"cancel_only": True}, "cancel_only"),
        ({"limit_only": True}, "limit_only"),
    ],
)
def test_products_that_cannot_take_a_market_order(flags: dict[str, Any], expected: str) -> None:
    assert reason(check(proposal(), product=BTC.model_copy(update=flags))) == expected
    assert reason(check(proposal(), product=None)) == "product_unknown"


def test_a_sell_needs_a_position_and_sells_all_of_it_on_the_increment() -> None:
    assert reason(check(proposal("SELL"))) == "no_position"
    book = replace(BOOK, positions_base={"BTC-USD": Decimal("0.001234567891")})
    assert check(proposal("SELL"), book) == Approved("SELL", None, Decimal("0.00123456"), None)
    dust = replace(BOOK, positions_base={"BTC-USD": Decimal("0.000001")})
    assert reason(check(proposal("SELL"), dust)) == "below_min_size"


def test_the_daily_loss_limit_halts_at_its_boundary() -> None:
    assert reason(check(proposal(), replace(BOOK, realized_today_quote=Decimal("-99.99")))) == "approved"
    assert reason(check(proposal(), replace(BOOK, realized_today_quote=Decimal(-100)))) == "halted"
    assert reason(check(proposal(), replace(BOOK, halted=True))) == "halted"


def test_a_resume_lets_trading_go_on_past_todays_loss_limit() -> None:
    lost = replace(BOOK, realized_today_quote=Decimal(-150))
    assert reason(check(proposal(), lost)) == "halted"
    assert reason(check(proposal(), replace(lost, loss_resumed_today=True))) == "approved"
