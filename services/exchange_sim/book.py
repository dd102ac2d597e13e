"""The simulator's order book: the depth its market orders walk, plus the account's own resting orders.

A market order of notional N fills at touch * (1 +- MAX_SLIPPAGE * N / depth), so the book holds depth / GRID
of notional at each of GRID prices spread evenly from the touch to MAX_SLIPPAGE away: what the book shows is
what a market order would get. An answer shows the best `levels` of them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from decimal import ROUND_DOWN, ROUND_UP, Decimal

from services.exchange_sim.catalog import ProductSpec
from services.exchange_sim.matching import MAX_SLIPPAGE, SimOrder

Level = tuple[Decimal, Decimal]  # price, base size
GRID = 1000


def order_book(
    product: ProductSpec,
    *,
    bid: Decimal,
    ask: Decimal,
    depth: Decimal,
    resting: Iterable[SimOrder],
    levels: int,
) -> tuple[list[Level], list[Level]]:
    """(bids best first, asks best first), `levels` per side at most, prices and sizes on the increments."""
    bids: defaultdict[Decimal, Decimal] = defaultdict(Decimal)
    asks: defaultdict[Decimal, Decimal] = defaultdict(Decimal)
    per_level = depth / GRID
    for k in range(min(levels, GRID)):
        offset = MAX_SLIPPAGE * k / GRID
        bid_price = (bid * (1 - offset)).quantize(product.quote_increment, rounding=ROUND_DOWN)
        ask_price = (ask * (1 + offset)).quantize(product.quote_increment, rounding=ROUND_UP)
        if bid_price > 0:
            bids[bid_price] += _size(per_level / bid_price, product)
        asks[ask_price] += _size(per_level / ask_price, product)
    for order in resting:
        in_book = order.order_type == "LIMIT" or order.triggered
        if order.status != "OPEN" or not in_book or order.limit_price is None or order.base_size is None:
            continue
        side = bids if order.side == "BUY" else asks
        side[order.limit_price] += order.base_size - order.filled_size
    best_bids = sorted(((p, s) for p, s in bids.items() if s > 0), reverse=True)[:levels]
    best_asks = sorted((p, s) for p, s in asks.items() if s > 0)[:levels]
    return best_bids, best_asks


def _size(base: Decimal, product: ProductSpec) -> Decimal:
    return base.quantize(product.base_increment, rounding=ROUND_DOWN)
