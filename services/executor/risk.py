"""The executor's risk rules as pure functions: a proposal, what the book looks like now, and the product's own
rules in; an order size or a rejection with its reason out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from services.executor.settings import RiskConfig
from shared.exchange.models import Product
from shared.proposal import Proposal

Reason = Literal[
    "expired",
    "halted",
    "max_trades_per_hour",
    "no_position",
    "max_open_positions",
    "cooldown",
    "product_unknown",
    "trading_disabled",
    "cancel_only",
    "limit_only",
    "max_position_quote",
    "max_total_quote",
    "insufficient_balance",
    "below_min_size",
]
ZERO = Decimal(0)
# A buy capped below the product's minimum by one of these is rejected with that limit's name.
CAP_REASONS: dict[str, Reason] = {
    "max_position_quote": "max_position_quote",
    "max_total_quote": "max_total_quote",
    "insufficient_balance": "insufficient_balance",
}


@dataclass(frozen=True, slots=True)
class Book:
    """What the executor holds and has done, as the rules need it."""

    halted: bool = False
    trades_last_hour: int = 0
    positions_quote: dict[str, Decimal] = field(default_factory=dict)  # open positions' cost, by product
    positions_base: dict[str, Decimal] = field(default_factory=dict)  # open positions' size, by product
    last_exit_at: dict[str, float] = field(default_factory=dict)
    available: dict[str, Decimal] = field(default_factory=dict)  # spendable balance, by currency
    realized_today_quote: Decimal = ZERO
    loss_resumed_today: bool = False  # a resume after today's loss limit lets trading go on until tomorrow


@dataclass(frozen=True, slots=True)
class Approved:
    side: Literal["BUY", "SELL"]
    quote_size: Decimal | None  # a buy spends this much quote currency
    base_size: Decimal | None  # a sell sells this much of the base currency
    capped_by: str | None  # the limit that reduced the size, if one did


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    detail: str


def daily_loss_reached(book: Book, config: RiskConfig) -> bool:
    """Realised losses today at or past the daily limit: trading halts until the next UTC day or a resume."""
    return not book.loss_resumed_today and -book.realized_today_quote >= Decimal(str(config.max_daily_loss_quote))


def sized(proposal: Proposal, config: RiskConfig) -> Decimal:
    """The proposal's quote_size scaled by its conviction: full at `full_size_conviction` and above, never below
    `min_size_factor` of it."""
    factor = min(max(proposal.conviction / config.full_size_conviction, config.min_size_factor), 1.0)
    return proposal.quote_size * Decimal(str(factor))


def assess(
    proposal: Proposal, *, book: Book, product: Product | None, config: RiskConfig, now: float
) -> Approved | Rejected:
    """Every rule in order; the first that refuses names the reason."""
    pid = proposal.product_id
    if proposal.expired(datetime.fromtimestamp(now, UTC)):
        return Rejected("expired", f"expired at {proposal.expires_at.isoformat()}")
    if book.halted or daily_loss_reached(book, config):
        return Rejected("halted", "trading is halted (daily loss limit, or a halt through the API)")
    if product is None:
        return Rejected("product_unknown", f"{pid} is not a product of the exchange")
    if product.trading_disabled or product.is_disabled or (product.status or "online").lower() != "online":
        return Rejected("trading_disabled", f"{pid} is not tradable now (status {product.status})")
    if product.cancel_only:
        return Rejected("cancel_only", f"{pid} accepts cancels only")
    if product.limit_only:
        return Rejected("limit_only", f"{pid} accepts limit orders only; the executor places market orders")
    if proposal.side == "SELL":
        return _sell(proposal, book=book, product=product)
    if book.trades_last_hour >= config.max_trades_per_hour:
        return Rejected(
            "max_trades_per_hour",
            f"{book.trades_last_hour} trades in the last hour; at most {config.max_trades_per_hour}",
        )
    if pid not in book.positions_quote and len(book.positions_quote) >= config.max_open_positions:
        return Rejected(
            "max_open_positions", f"{len(book.positions_quote)} positions open; at most {config.max_open_positions}"
        )
    exited = book.last_exit_at.get(pid)
    if exited is not None and now - exited < config.cooldown_s:
        return Rejected("cooldown", f"{pid} exited {now - exited:.0f}s ago; the cooldown is {config.cooldown_s:g}s")
    return _buy(proposal, book=book, product=product, config=config)


def _buy(proposal: Proposal, *, book: Book, product: Product, config: RiskConfig) -> Approved | Rejected:
    pid = proposal.product_id
    quote = product.quote_currency_id or pid.split("-")[1]
    held = book.positions_quote.get(pid, ZERO)
    caps = {
        "max_order_quote": Decimal(str(config.max_order_quote)),
        "max_position_quote": Decimal(str(config.max_position_quote)) - held,
        "max_total_quote": Decimal(str(config.max_total_quote)) - sum(book.positions_quote.values(), ZERO),
        "insufficient_balance": book.available.get(quote, ZERO),
    }
    size, capped_by = sized(proposal, config), None
    for name, cap in caps.items():
        if cap < size:
            size, capped_by = max(cap, ZERO), name
    step = product.quote_increment or Decimal("0.01")
    size = (size / step).to_integral_value(rounding=ROUND_DOWN) * step
    minimum = product.quote_min_size or ZERO
    if size <= 0 or size < minimum:
        reason = CAP_REASONS.get(capped_by or "", "below_min_size")
        return Rejected(reason, f"{size} {quote} after the limits is below the minimum order of {minimum} {quote}")
    return Approved("BUY", size, None, capped_by)


def _sell(proposal: Proposal, *, book: Book, product: Product) -> Approved | Rejected:
    pid = proposal.product_id
    held = book.positions_base.get(pid, ZERO)
    if held <= 0:
        return Rejected("no_position", f"no open position in {pid} to sell (spot only)")
    step = product.base_increment or Decimal("0.00000001")
    size = (held / step).to_integral_value(rounding=ROUND_DOWN) * step
    minimum = product.base_min_size or ZERO
    if size <= 0 or size < minimum:
        return Rejected("below_min_size", f"the position of {held} is below the minimum order of {minimum}")
    return Approved("SELL", None, size, None)
