"""Coinbase Advanced Trade JSON shapes of the simulator's objects (every number a string)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from services.exchange_sim.catalog import ProductSpec
from services.exchange_sim.market import Candle, Market, Trade
from services.exchange_sim.matching import Account, SimFill, SimOrder

ACCOUNT_NAMESPACE = uuid.UUID("6f1c1d55-3b1e-4a5e-9a57-2f1f7f0c2b10")
FIAT = {"USD", "EUR", "GBP"}
PORTFOLIO = "00000000-0000-0000-0000-00000000000a"
USER = "sim-user"


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def num(value: float | Decimal, step: Decimal | None = None) -> str:
    """A decimal string, on `step` (a power of ten) when given; never scientific notation."""
    if step is not None and isinstance(value, float):
        # float formatting is ten times faster than Decimal quantizing, and answers hold hundreds of numbers
        return f"{value:.{decimals(step)}f}"
    d = value if isinstance(value, Decimal) else Decimal(repr(value))
    if step is not None:
        d = d.quantize(step, rounding=ROUND_HALF_EVEN)
    return format(d.normalize() if step is None else d, "f")


def product_json(product: ProductSpec, market: Market, now: float) -> dict[str, Any]:
    stats = market.stats_24h(product.product_id, now)
    bid, ask = market.best_bid_ask(product.product_id, now)
    step = product.quote_increment
    return {
        "product_id": product.product_id,
        "price": num(stats.price, step),
        "price_percentage_change_24h": num(round(stats.price_percentage_change_24h, 8)),
        "volume_24h": num(stats.volume_24h, product.base_increment),
        "volume_percentage_change_24h": num(round(stats.volume_percentage_change_24h, 8)),
        "base_increment": num(product.base_increment),
        "quote_increment": num(product.quote_increment),
        "quote_min_size": num(product.quote_min_size),
        "quote_max_size": num(product.quote_max_size),
        "base_min_size": num(product.base_min_size),
        "base_max_size": num(product.base_max_size),
        "base_name": product.base_name,
        "quote_name": product.quote_name,
        "watched": False,
        "is_disabled": product.trading_disabled,
        "new": product.is_new,
        "status": product.status,
        "cancel_only": product.cancel_only,
        "limit_only": product.limit_only,
        "post_only": product.post_only,
        "trading_disabled": product.trading_disabled,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": product.quote,
        "base_currency_id": product.base,
        "fcm_trading_session_details": None,
        "mid_market_price": num((bid + ask) / 2, step),
        "alias": "",
        "alias_to": [],
        "base_display_symbol": product.base,
        "quote_display_symbol": product.quote,
        "view_only": False,
        "price_increment": num(product.quote_increment),
        "display_name": f"{product.base}-{product.quote}",
        "product_venue": "CBE",
        "approximate_quote_24h_volume": num(round(stats.approximate_quote_24h_volume, 2)),
        "high_24h": num(stats.high_24h, step),
        "low_24h": num(stats.low_24h, step),
    }


def decimals(step: Decimal) -> int:
    """Digits after the point of a power-of-ten increment."""
    return max(-int(step.as_tuple().exponent), 0)


def candles_json(candles: list[Candle], product: ProductSpec) -> list[dict[str, str]]:
    p, v = decimals(product.quote_increment), decimals(product.base_increment)
    return [
        {
            "start": str(c.start),
            "low": f"{c.low:.{p}f}",
            "high": f"{c.high:.{p}f}",
            "open": f"{c.open:.{p}f}",
            "close": f"{c.close:.{p}f}",
            "volume": f"{c.volume:.{v}f}",
        }
        for c in candles
    ]


def trade_json(trade: Trade, product: ProductSpec) -> dict[str, str]:
    return {
        "trade_id": trade.trade_id,
        "product_id": product.product_id,
        "price": num(trade.price, product.quote_increment),
        "size": num(trade.size, product.base_increment),
        "time": rfc3339(trade.time),
        "side": trade.side,
        "exchange": "CBE",
    }


def level(price: Decimal, size: float, product: ProductSpec) -> dict[str, str]:
    return {"price": num(price), "size": num(size, product.base_increment)}


TIME_IN_FORCE = {
    "IOC": "IMMEDIATE_OR_CANCEL",
    "GTC": "GOOD_UNTIL_CANCELLED",
    "GTD": "GOOD_UNTIL_DATE_TIME",
    "FOK": "FILL_OR_KILL",
}


def trigger_status(order: SimOrder) -> str:
    if order.order_type != "STOP_LIMIT":
        return "INVALID_ORDER_TYPE"
    return "STOP_TRIGGERED" if order.triggered else "STOP_PENDING"


def order_json(order: SimOrder) -> dict[str, Any]:
    filled = order.filled_size
    average = order.filled_value / filled if filled else Decimal(0)
    target = order.base_size or filled
    completion = (filled / target * 100) if target else Decimal(0)
    return {
        "order_id": order.order_id,
        "product_id": order.product_id,
        "user_id": USER,
        "order_configuration": order.configuration,
        "side": order.side,
        "client_order_id": order.client_order_id,
        "status": order.status,
        "time_in_force": TIME_IN_FORCE[order.time_in_force],
        "created_time": rfc3339(order.created_time),
        "completion_percentage": num(completion.quantize(Decimal("0.01"))),
        "filled_size": num(filled),
        "average_filled_price": num(average.quantize(Decimal("1e-10"))) if filled else "0",
        "fee": "",
        "number_of_fills": str(order.number_of_fills),
        "filled_value": num(order.filled_value),
        "pending_cancel": False,
        "size_in_quote": order.quote_size is not None,
        "total_fees": num(order.total_fees),
        "size_inclusive_of_fees": order.quote_size is not None,
        "total_value_after_fees": num(
            order.filled_value + order.total_fees if order.side == "BUY" else order.filled_value - order.total_fees
        ),
        "trigger_status": trigger_status(order),
        "order_type": order.order_type,
        "reject_reason": "",
        "settled": order.status in ("FILLED", "CANCELLED"),
        "product_type": "SPOT",
        "reject_message": "",
        "cancel_message": "",
        "order_placement_source": "RETAIL_ADVANCED",
        "outstanding_hold_amount": num(order.hold_amount),
        "is_liquidation": False,
        "last_fill_time": rfc3339(order.last_fill_time) or None,
        "edit_history": [],
        "leverage": "",
        "margin_type": "UNKNOWN_MARGIN_TYPE",
        "retail_portfolio_id": PORTFOLIO,
        "originating_order_id": "",
        "attached_order_id": "",
    }


def fill_json(fill: SimFill) -> dict[str, Any]:
    return {
        "entry_id": fill.entry_id,
        "trade_id": fill.trade_id,
        "order_id": fill.order_id,
        "trade_time": rfc3339(fill.trade_time),
        "trade_type": "FILL",
        "price": num(fill.price),
        # Coinbase gives a quote-sized order's fill size in the quote currency
        "size": num(fill.price * fill.size if fill.size_in_quote else fill.size),
        "commission": num(fill.commission),
        "product_id": fill.product_id,
        "sequence_timestamp": rfc3339(fill.trade_time),
        "liquidity_indicator": fill.liquidity_indicator,
        "size_in_quote": fill.size_in_quote,
        "user_id": USER,
        "side": fill.side,
        "retail_portfolio_id": PORTFOLIO,
    }


def account_json(currency: str, account: Account, created: float) -> dict[str, Any]:
    hold = account.holds.get(currency, Decimal(0))
    return {
        "uuid": str(uuid.uuid5(ACCOUNT_NAMESPACE, currency)),
        "name": f"{currency} Wallet",
        "currency": currency,
        "available_balance": {"value": num(account.available(currency)), "currency": currency},
        "default": currency == "USD",
        "active": True,
        "created_at": rfc3339(created),
        "updated_at": rfc3339(created),
        "deleted_at": None,
        "type": "ACCOUNT_TYPE_FIAT" if currency in FIAT else "ACCOUNT_TYPE_CRYPTO",
        "ready": True,
        "hold": {"value": num(hold), "currency": currency},
        "retail_portfolio_id": PORTFOLIO,
        "platform": "ACCOUNT_PLATFORM_CONSUMER",
    }
