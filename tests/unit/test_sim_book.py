"""The simulator's order book: the depth market orders walk, and the account's own resting orders in it."""

from __future__ import annotations

from decimal import Decimal

from services.exchange_sim.book import GRID, order_book
from services.exchange_sim.matching import MAX_SLIPPAGE, SimOrder, slipped_price
from tests.unit.test_sim_matching import ASK, BID, BTC

DEPTH = Decimal(1_000_000)


def resting(side: str, price: str, size: str, order_type: str = "LIMIT", **extra: object) -> SimOrder:
    return SimOrder(
        order_id=f"{side}{price}",
        client_order_id="c",
        product_id="BTC-USD",
        side=side,  # type: ignore[arg-type]
        order_type=order_type,  # type: ignore[arg-type]
        configuration={},
        created_time=0.0,
        base_size=Decimal(size),
        limit_price=Decimal(price),
        **extra,  # type: ignore[arg-type]
    )


def test_the_book_starts_at_the_touch_and_is_ordered_best_first() -> None:
    bids, asks = order_book(BTC, bid=BID, ask=ASK, depth=DEPTH, resting=[], levels=50)
    assert bids[0][0] == BID and asks[0][0] == ASK and len(bids) == len(asks) == 50
    assert [p for p, _ in bids] == sorted((p for p, _ in bids), reverse=True)
    assert [p for p, _ in asks] == sorted(p for p, _ in asks)
    assert all(size % BTC.base_increment == 0 and price % BTC.quote_increment == 0 for price, size in bids + asks)


def test_what_the_book_shows_is_what_a_market_order_pays() -> None:
    _, asks = order_book(BTC, bid=BID, ask=ASK, depth=DEPTH, resting=[], levels=GRID)
    notional = Decimal(0)
    for price, size in asks[: GRID // 4]:
        notional += price * size
    walked_to = asks[GRID // 4 - 1][0]
    paid = slipped_price(BTC, side="BUY", touch=ASK, notional=notional, depth=DEPTH)
    assert abs(paid - walked_to) / walked_to < Decimal("0.0005")
    assert asks[-1][0] <= ASK * (1 + MAX_SLIPPAGE)


def test_the_accounts_resting_orders_are_in_the_book_but_not_an_untriggered_stop() -> None:
    orders = [
        resting("BUY", str(BID), "0.5"),
        resting("SELL", "90100.00", "0.25"),
        resting("SELL", "90020.00", "1", order_type="STOP_LIMIT", stop_price=Decimal("89000")),
    ]
    plain_bids, plain_asks = order_book(BTC, bid=BID, ask=ASK, depth=DEPTH, resting=[], levels=GRID)
    bids, asks = order_book(BTC, bid=BID, ask=ASK, depth=DEPTH, resting=orders, levels=GRID)
    assert bids[0] == (BID, plain_bids[0][1] + Decimal("0.5"))
    assert dict(asks)[Decimal("90100.00")] == dict(plain_asks).get(Decimal("90100.00"), 0) + Decimal("0.25")
    assert dict(asks).get(Decimal("90020.00")) == dict(plain_asks).get(Decimal("90020.00"))
