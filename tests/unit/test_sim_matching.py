"""The simulator's order rules: fills, fees, holds, and no balance ever below zero."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.exchange_sim.catalog import ProductSpec
from services.exchange_sim.matching import (
    Account,
    BadOrderRequest,
    OrderRejected,
    cancel,
    fill_resting,
    parse_request,
    place,
)

BTC = ProductSpec(
    product_id="BTC-USD",
    base="BTC",
    quote="USD",
    base_name="Bitcoin",
    quote_name="US Dollar",
    base_increment=Decimal("0.00000001"),
    quote_increment=Decimal("0.01"),
    base_min_size=Decimal("0.00001"),
    base_max_size=Decimal("3400"),
    quote_min_size=Decimal("1"),
    quote_max_size=Decimal("150000000"),
    status="online",
    trading_disabled=False,
    cancel_only=False,
    limit_only=False,
    post_only=False,
    is_new=False,
    initial_price=Decimal("90000"),
    volatility=0.03,
    volume=5.0,
)
BID, ASK = Decimal("89990.00"), Decimal("90010.00")
FEES = {"maker_pct": Decimal("0.4"), "taker_pct": Decimal("0.6")}
ids = itertools.count()


def request(side: str, config: dict[str, object]) -> dict[str, object]:
    return {"client_order_id": f"c{next(ids)}", "product_id": "BTC-USD", "side": side, "order_configuration": config}


def submit(account: Account, body: dict[str, object], *, bid: Decimal = BID, ask: Decimal = ASK):  # type: ignore[no-untyped-def]
    return place(
        account,
        parse_request(body),
        product=BTC,
        bid=bid,
        ask=ask,
        depth=Decimal(1_000_000),
        now=1.0,
        order_id=f"o{next(ids)}",
        trade_id=f"t{next(ids)}",
        **FEES,
    )


def test_market_buy_by_quote_spends_at_most_the_quote_with_fees() -> None:
    account = Account(balances={"USD": Decimal(1000)})
    order, fills = submit(account, request("BUY", {"market_market_ioc": {"quote_size": "100"}}))
    assert order.status == "FILLED" and len(fills) == 1
    fill = fills[0]
    assert fill.price >= ASK and fill.liquidity_indicator == "TAKER"
    assert fill.commission == (fill.price * fill.size * Decimal("0.006")).quantize(Decimal("1e-8"), rounding="ROUND_UP")
    spent = Decimal(1000) - account.balances["USD"]
    assert Decimal(99) < spent <= Decimal(100)
    assert account.balances["BTC"] == fill.size


def test_limit_rests_with_a_hold_then_fills_as_maker() -> None:
    account = Account(balances={"USD": Decimal(1000)})
    order, fills = submit(
        account,
        request("BUY", {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "80000.00", "post_only": True}}),
    )
    assert order.status == "OPEN" and not fills
    assert account.holds["USD"] == Decimal("80") * Decimal("1.004")
    assert (
        fill_resting(account, order, BTC, bid=BID, ask=ASK, now=2.0, trade_id="t", maker_pct=FEES["maker_pct"]) is None
    )
    fill = fill_resting(
        account,
        order,
        BTC,
        bid=Decimal("79990"),
        ask=Decimal("80000"),
        now=3.0,
        trade_id="t",
        maker_pct=FEES["maker_pct"],
    )
    assert fill is not None and fill.price == Decimal("80000.00") and fill.liquidity_indicator == "MAKER"
    assert account.holds["USD"] == 0
    assert account.balances["USD"] == Decimal(1000) - Decimal(80) - Decimal("0.32")


def test_cancel_releases_the_hold() -> None:
    account = Account(balances={"BTC": Decimal(1)})
    order, _ = submit(account, request("SELL", {"limit_limit_gtc": {"base_size": "0.5", "limit_price": "99000.00"}}))
    assert account.available("BTC") == Decimal("0.5")
    assert cancel(account, order) is None
    assert account.available("BTC") == Decimal(1) and order.status == "CANCELLED"
    assert cancel(account, order) == "DUPLICATE_CANCEL_REQUEST"


@pytest.mark.parametrize(
    ("side", "config", "error"),
    [
        ("BUY", {"market_market_ioc": {"quote_size": "5000"}}, "INSUFFICIENT_FUND"),
        ("SELL", {"market_market_ioc": {"base_size": "0.000000001"}}, "INVALID_SIZE_PRECISION"),
        ("SELL", {"market_market_ioc": {"base_size": "0.000001"}}, "INVALID_BASE_SIZE_TOO_SMALL"),
        ("BUY", {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "80000.001"}}, "INVALID_PRICE_PRECISION"),
        (
            "BUY",
            {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "95000.00", "post_only": True}},
            "INVALID_LIMIT_PRICE_POST_ONLY",
        ),
        ("BUY", {"stop_limit_stop_limit_gtc": {"base_size": "1"}}, "UNSUPPORTED_ORDER_CONFIGURATION"),
    ],
)
def test_refusals_use_coinbase_reasons_and_change_nothing(side: str, config: dict[str, object], error: str) -> None:
    account = Account(balances={"USD": Decimal(1000), "BTC": Decimal("0.01")})
    before = (dict(account.balances), dict(account.holds))
    with pytest.raises(OrderRejected) as refused:
        submit(account, request(side, config))
    assert refused.value.error == error
    assert (account.balances, account.holds) == before


@pytest.mark.parametrize(
    "body",
    [
        {"product_id": "BTC-USD", "side": "BUY", "order_configuration": {"market_market_ioc": {"quote_size": "1"}}},
        request("HOLD", {"market_market_ioc": {"quote_size": "1"}}),
        request("BUY", {"market_market_ioc": {"quote_size": 10}}),
        request("BUY", {"market_market_ioc": {"quote_size": "10", "base_size": "1"}}),
        request("BUY", {"limit_limit_gtc": {"base_size": "1"}}),
    ],
)
def test_malformed_requests_name_the_problem(body: dict[str, object]) -> None:
    with pytest.raises(BadOrderRequest):
        parse_request(body)


orders = st.lists(
    st.tuples(
        st.sampled_from(["BUY", "SELL"]),
        st.sampled_from(["market", "limit", "cancel", "move"]),
        st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("0.05"), places=4),
        st.decimals(min_value=Decimal("85000"), max_value=Decimal("95000"), places=2),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(orders)
def test_no_balance_or_hold_ever_goes_negative(steps: list[tuple[str, str, Decimal, Decimal]]) -> None:
    account = Account(balances={"USD": Decimal(2000), "BTC": Decimal("0.02")})
    open_orders = []
    bid, ask = BID, ASK
    for side, kind, size, price in steps:
        try:
            if kind == "market":
                config = {"base_size": str(size)} if side == "SELL" else {"quote_size": str(size * 1000)}
                submit(account, request(side, {"market_market_ioc": config}), bid=bid, ask=ask)
            elif kind == "limit":
                order, _ = submit(
                    account,
                    request(side, {"limit_limit_gtc": {"base_size": str(size), "limit_price": str(price)}}),
                    bid=bid,
                    ask=ask,
                )
                if order.status == "OPEN":
                    open_orders.append(order)
            elif kind == "cancel" and open_orders:
                cancel(account, open_orders.pop(0))
            else:
                bid, ask = price - Decimal(10), price + Decimal(10)
                for order in open_orders:
                    fill_resting(
                        account, order, BTC, bid=bid, ask=ask, now=5.0, trade_id="t", maker_pct=FEES["maker_pct"]
                    )
        except OrderRejected:
            pass
        for currency in ("USD", "BTC"):
            assert account.balances.get(currency, Decimal(0)) >= 0
            assert account.holds.get(currency, Decimal(0)) >= 0
            assert account.available(currency) >= 0


def test_a_buy_for_exactly_the_balance_never_leaves_it_below_zero() -> None:
    size = Decimal("0.00011111")
    notional = size * ASK
    # what the funds check allowed before: the fee unrounded, 1e-8 short of what the fill then charged
    account = Account(balances={"USD": notional * (1 + FEES["taker_pct"] / 100)})
    try:
        crossing = {"limit_limit_gtc": {"base_size": str(size), "limit_price": str(ASK)}}  # takes at the ask
        submit(account, request("BUY", crossing))
    except OrderRejected as refused:
        assert refused.error == "INSUFFICIENT_FUND"
    assert account.balances["USD"] >= 0


@settings(max_examples=100, deadline=None)
@given(st.decimals(min_value=Decimal("1"), max_value=Decimal("5000"), places=2))
def test_a_buy_sized_by_all_the_quote_spends_at_most_that(quote: Decimal) -> None:
    account = Account(balances={"USD": quote})
    order, _ = submit(account, request("BUY", {"market_market_ioc": {"quote_size": str(quote)}}))
    assert account.balances["USD"] >= 0
    assert order.filled_value + order.total_fees <= quote
