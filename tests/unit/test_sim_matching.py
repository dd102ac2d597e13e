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
    advance_resting,
    cancel,
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


def advance(account: Account, order, *, bid: Decimal = BID, ask: Decimal = ASK, now: float = 2.0):  # type: ignore[no-untyped-def]
    return advance_resting(account, order, BTC, bid=bid, ask=ask, now=now, trade_id=f"t{next(ids)}", **FEES)


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
    assert advance(account, order) == (False, None)
    moved, fill = advance(account, order, bid=Decimal("79990"), ask=Decimal("80000"), now=3.0)
    assert moved and fill is not None and fill.price == Decimal("80000.00") and fill.liquidity_indicator == "MAKER"
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
        ("BUY", {"trigger_bracket_gtc": {"base_size": "1"}}, "UNSUPPORTED_ORDER_CONFIGURATION"),
        (
            "SELL",
            {"limit_limit_gtd": {"base_size": "0.01", "limit_price": "99000.00", "end_time": "1970-01-01T00:00:00Z"}},
            "INVALID_END_TIME",
        ),
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
                    advance(account, order, bid=bid, ask=ask, now=5.0)
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


def stop_limit(side: str, stop: str, limit: str, direction: str, size: str = "0.01") -> dict[str, object]:
    config = {"base_size": size, "limit_price": limit, "stop_price": stop, "stop_direction": direction}
    return request(side, {"stop_limit_stop_limit_gtc": config})


def test_a_stop_limit_rests_untriggered_then_takes_once_the_price_reaches_its_stop() -> None:
    account = Account(balances={"BTC": Decimal(1), "USD": Decimal(0)})
    order, fills = submit(account, stop_limit("SELL", "85000.00", "84000.00", "STOP_DIRECTION_STOP_DOWN"))
    assert order.status == "OPEN" and not fills and not order.triggered
    assert account.available("BTC") == Decimal("0.99")
    assert advance(account, order, bid=Decimal("86000"), ask=Decimal("86010")) == (False, None)
    moved, fill = advance(account, order, bid=Decimal("84990"), ask=Decimal("85000"))
    assert moved and order.triggered and order.status == "FILLED"
    assert fill is not None and fill.price == Decimal("84990") and fill.liquidity_indicator == "TAKER"
    assert account.holds["BTC"] == 0 and account.balances["BTC"] == Decimal("0.99")
    assert account.balances["USD"] == Decimal("849.9") - fill.commission


def test_a_triggered_stop_whose_limit_does_not_cross_rests_as_a_limit_order() -> None:
    account = Account(balances={"USD": Decimal(10_000)})
    order, _ = submit(account, stop_limit("BUY", "95000.00", "95100.00", "STOP_DIRECTION_STOP_UP"))
    held = account.holds["USD"]
    assert held == Decimal("951") * Decimal("1.006")  # the taker fee: a triggered stop may take
    moved, fill = advance(account, order, bid=Decimal("95150"), ask=Decimal("95160"))
    assert moved and fill is None and order.triggered and order.status == "OPEN"
    moved, fill = advance(account, order, bid=Decimal("95090"), ask=Decimal("95100"))
    assert fill is not None and fill.price == Decimal("95100.00") and fill.liquidity_indicator == "MAKER"
    assert account.holds["USD"] == 0 and account.balances["USD"] == Decimal(10_000) - Decimal(951) - fill.commission


@pytest.mark.parametrize(
    ("side", "stop", "direction", "preview"),
    [
        ("SELL", "91000.00", "STOP_DIRECTION_STOP_DOWN", "PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE"),
        ("BUY", "89000.00", "STOP_DIRECTION_STOP_UP", "PREVIEW_STOP_PRICE_BELOW_LAST_TRADE_PRICE"),
    ],
)
def test_a_stop_on_the_wrong_side_of_the_price_is_refused_as_coinbase_previews_it(
    side: str, stop: str, direction: str, preview: str
) -> None:
    account = Account(balances={"BTC": Decimal(1), "USD": Decimal(10_000)})
    with pytest.raises(OrderRejected) as refused:
        submit(account, stop_limit(side, stop, stop, direction))
    assert refused.value.preview == preview and account.holds == {}


def test_fill_or_kill_and_ioc_take_at_once_or_die_holding_nothing() -> None:
    account = Account(balances={"USD": Decimal(1000)})
    for kind in ("limit_limit_fok", "sor_limit_ioc"):
        killed, fills = submit(account, request("BUY", {kind: {"base_size": "0.001", "limit_price": "80000.00"}}))
        assert killed.status == "CANCELLED" and not fills and account.holds.get("USD", 0) == 0
        taken, fills = submit(account, request("BUY", {kind: {"base_size": "0.001", "limit_price": "91000.00"}}))
        assert taken.status == "FILLED" and fills[0].price == ASK and fills[0].liquidity_indicator == "TAKER"


def test_a_gtd_order_expires_at_its_end_time_and_gives_its_hold_back() -> None:
    account = Account(balances={"BTC": Decimal(1)})
    gtd = {"base_size": "0.5", "limit_price": "99000.00", "end_time": "1970-01-01T00:01:40Z"}
    order, _ = submit(account, request("SELL", {"limit_limit_gtd": gtd}))
    assert order.status == "OPEN" and order.end_time == 100 and account.available("BTC") == Decimal("0.5")
    assert advance(account, order, now=99.0) == (False, None)
    assert advance(account, order, now=100.0) == (True, None)
    assert order.status == "EXPIRED" and account.available("BTC") == Decimal(1)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"limit_limit_gtd": {"base_size": "1", "limit_price": "1.00", "end_time": "tomorrow"}}, "end_time"),
        ({"limit_limit_gtd": {"base_size": "1", "limit_price": "1.00", "end_time": "2030-01-01T00:00:00"}}, "zone"),
        (
            {"stop_limit_stop_limit_gtc": {"base_size": "1", "limit_price": "1.00", "stop_price": "1.00"}},
            "stop_direction",
        ),
        ({"stop_limit_stop_limit_gtc": {"base_size": "1", "limit_price": "1.00"}}, "stop_price"),
        ({"limit_limit_fok": {"base_size": "1", "limit_price": "1.00", "post_only": True}}, "post_only"),
    ],
)
def test_malformed_new_order_types_name_the_field(config: dict[str, object], named: str) -> None:
    with pytest.raises(BadOrderRequest, match=named):
        parse_request(request("BUY", config))
