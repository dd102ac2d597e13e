"""Orders, fills and balances of the simulated account: Coinbase's rules as pure functions over an Account."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation
from typing import Any, Literal

from services.exchange_sim.catalog import ProductSpec

Side = Literal["BUY", "SELL"]
OrderType = Literal["MARKET", "LIMIT", "STOP_LIMIT"]
TimeInForce = Literal["IOC", "GTC", "GTD", "FOK"]
STOP_UP, STOP_DOWN = "STOP_DIRECTION_STOP_UP", "STOP_DIRECTION_STOP_DOWN"
# The limit-priced order configurations: order type and time in force of each.
LIMIT_CONFIGURATIONS: dict[str, tuple[OrderType, TimeInForce]] = {
    "limit_limit_gtc": ("LIMIT", "GTC"),
    "limit_limit_gtd": ("LIMIT", "GTD"),
    "limit_limit_fok": ("LIMIT", "FOK"),
    "sor_limit_ioc": ("LIMIT", "IOC"),
    "stop_limit_stop_limit_gtc": ("STOP_LIMIT", "GTC"),
    "stop_limit_stop_limit_gtd": ("STOP_LIMIT", "GTD"),
}
HUNDRED = Decimal(100)
# Price impact of a market order: MAX_SLIPPAGE at a notional equal to the depth near the touch.
MAX_SLIPPAGE = Decimal("0.05")
FEE_STEP = Decimal("1e-8")
# No size or price of any product is beyond 10^±15; past that, the increment checks cannot even be computed.
MAX_EXPONENT = 15


class OrderRejected(Exception):
    """A create-order failure in Coinbase's terms (HTTP 200 with success=false)."""

    def __init__(self, error: str, message: str, *, preview: str | None = None):
        super().__init__(message)
        self.error = error
        self.message = message
        self.preview = preview or f"PREVIEW_{error}"


class BadOrderRequest(Exception):
    """The body is not a create-order request at all (HTTP 400 INVALID_ARGUMENT)."""


@dataclass
class SimFill:
    entry_id: str
    trade_id: str
    order_id: str
    trade_time: float
    price: Decimal
    size: Decimal
    commission: Decimal
    product_id: str
    side: Side
    liquidity_indicator: Literal["MAKER", "TAKER"]
    size_in_quote: bool = False


@dataclass
class SimOrder:
    order_id: str
    client_order_id: str
    product_id: str
    side: Side
    order_type: OrderType
    configuration: dict[str, Any]
    created_time: float
    base_size: Decimal | None = None
    quote_size: Decimal | None = None
    limit_price: Decimal | None = None
    post_only: bool = False
    time_in_force: TimeInForce = "GTC"
    end_time: float | None = None
    stop_price: Decimal | None = None
    stop_direction: str | None = None
    triggered: bool = False
    status: str = "OPEN"
    filled_size: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)
    total_fees: Decimal = Decimal(0)
    number_of_fills: int = 0
    last_fill_time: float | None = None
    hold_currency: str = ""
    hold_amount: Decimal = Decimal(0)

    def to_record(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SimOrder:
        decimals = {
            "base_size",
            "quote_size",
            "limit_price",
            "stop_price",
            "filled_size",
            "filled_value",
            "total_fees",
            "hold_amount",
        }
        record = {"time_in_force": "IOC" if record.get("order_type") == "MARKET" else "GTC"} | record
        return cls(**{k: (Decimal(v) if k in decimals and v is not None else v) for k, v in record.items()})


@dataclass
class Account:
    """Balances (total, holds included) and holds per currency."""

    balances: dict[str, Decimal] = field(default_factory=dict)
    holds: dict[str, Decimal] = field(default_factory=dict)

    def copy(self) -> Account:
        return Account(dict(self.balances), dict(self.holds))

    def available(self, currency: str) -> Decimal:
        return self.balances.get(currency, Decimal(0)) - self.holds.get(currency, Decimal(0))

    def move(self, currency: str, amount: Decimal) -> None:
        self.balances[currency] = self.balances.get(currency, Decimal(0)) + amount

    def hold(self, currency: str, amount: Decimal) -> None:
        self.holds[currency] = self.holds.get(currency, Decimal(0)) + amount


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: str
    product_id: str
    side: Side
    order_type: OrderType
    configuration: dict[str, Any]
    base_size: Decimal | None
    quote_size: Decimal | None
    limit_price: Decimal | None
    post_only: bool
    time_in_force: TimeInForce = "IOC"
    end_time: float | None = None
    stop_price: Decimal | None = None
    stop_direction: str | None = None


def _decimal(config: dict[str, Any], key: str, where: str) -> Decimal | None:
    raw = config.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise BadOrderRequest(f"{where}.{key} must be a decimal string, got {raw!r}")
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise BadOrderRequest(f"{where}.{key} must be a decimal string, got {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise BadOrderRequest(f"{where}.{key} must be a positive decimal, got {raw!r}")
    if value.adjusted() > MAX_EXPONENT or value.adjusted() < -MAX_EXPONENT:
        raise BadOrderRequest(f"{where}.{key} is out of any product's range, got {raw!r}")
    return value


def parse_request(body: Any) -> OrderRequest:
    """Check the shape of a create-order body; business rules come later in `place`."""
    if not isinstance(body, dict):
        raise BadOrderRequest("body must be a JSON object")
    client_order_id = body.get("client_order_id")
    if not isinstance(client_order_id, str) or not client_order_id or len(client_order_id) > 128:
        raise BadOrderRequest(f"client_order_id must be a non-empty string, got {client_order_id!r}")
    product_id = body.get("product_id")
    if not isinstance(product_id, str) or not product_id:
        raise BadOrderRequest(f"product_id must be a string, got {product_id!r}")
    side = body.get("side")
    if side not in ("BUY", "SELL"):
        raise BadOrderRequest(f"side must be BUY or SELL, got {side!r}")
    configuration = body.get("order_configuration")
    if not isinstance(configuration, dict) or len(configuration) != 1:
        raise BadOrderRequest("order_configuration must be an object with exactly one order type")
    ((kind, config),) = configuration.items()
    if not isinstance(config, dict):
        raise BadOrderRequest(f"order_configuration.{kind} must be an object")
    where = f"order_configuration.{kind}"
    if kind == "market_market_ioc":
        base, quote = _decimal(config, "base_size", where), _decimal(config, "quote_size", where)
        if (base is None) == (quote is None):
            raise BadOrderRequest(f"{where} needs exactly one of base_size and quote_size")
        return OrderRequest(client_order_id, product_id, side, "MARKET", configuration, base, quote, None, False)
    if kind not in LIMIT_CONFIGURATIONS:
        raise OrderRejected("UNSUPPORTED_ORDER_CONFIGURATION", f"order configuration {kind!r} is not supported here")
    order_type, time_in_force = LIMIT_CONFIGURATIONS[kind]
    base, price = _decimal(config, "base_size", where), _decimal(config, "limit_price", where)
    if base is None or price is None:
        raise BadOrderRequest(f"{where} needs base_size and limit_price")
    post_only = config.get("post_only", False)
    if not isinstance(post_only, bool):
        raise BadOrderRequest(f"{where}.post_only must be a boolean, got {post_only!r}")
    if post_only and time_in_force in ("IOC", "FOK"):
        raise BadOrderRequest(f"{where}.post_only cannot be true: the order takes or dies")
    end_time = _end_time(config, where) if time_in_force == "GTD" else None
    stop_price, direction = None, None
    if order_type == "STOP_LIMIT":
        stop_price, direction = _decimal(config, "stop_price", where), config.get("stop_direction")
        if stop_price is None:
            raise BadOrderRequest(f"{where} needs stop_price")
        if direction not in (STOP_UP, STOP_DOWN):
            raise BadOrderRequest(f"{where}.stop_direction must be {STOP_UP} or {STOP_DOWN}, got {direction!r}")
    return OrderRequest(
        client_order_id,
        product_id,
        side,
        order_type,
        configuration,
        base,
        None,
        price,
        post_only,
        time_in_force,
        end_time,
        stop_price,
        direction,
    )


def _end_time(config: dict[str, Any], where: str) -> float:
    raw = config.get("end_time")
    try:
        if not isinstance(raw, str):
            raise ValueError
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError
    except ValueError:
        raise BadOrderRequest(f"{where}.end_time must be an RFC 3339 time with a zone, got {raw!r}") from None
    return moment.timestamp()


def _multiple_of(value: Decimal, step: Decimal) -> bool:
    return (value % step) == 0


def check_product(product: ProductSpec, request: OrderRequest) -> None:
    """Coinbase's product-level refusals: status flags, increments, minimum and maximum sizes."""
    if product.status != "online" or product.trading_disabled:
        raise OrderRejected("PRODUCT_TRADING_DISABLED", f"trading is disabled for {product.product_id}")
    if product.cancel_only:
        raise OrderRejected("PRODUCT_CANCEL_ONLY", f"{product.product_id} accepts cancels only")
    if product.limit_only and request.order_type == "MARKET":
        raise OrderRejected("PRODUCT_LIMIT_ONLY", f"{product.product_id} accepts limit orders only")
    if product.post_only and not request.post_only:
        raise OrderRejected("PRODUCT_POST_ONLY", f"{product.product_id} accepts post-only limit orders only")
    if request.base_size is not None:
        if not _multiple_of(request.base_size, product.base_increment):
            raise OrderRejected(
                "INVALID_SIZE_PRECISION", f"base_size {request.base_size} is not a multiple of {product.base_increment}"
            )
        if request.base_size < product.base_min_size:
            raise OrderRejected(
                "INVALID_BASE_SIZE_TOO_SMALL", f"base_size {request.base_size} is below {product.base_min_size}"
            )
        if request.base_size > product.base_max_size:
            raise OrderRejected(
                "INVALID_BASE_SIZE_TOO_LARGE", f"base_size {request.base_size} is above {product.base_max_size}"
            )
    if request.quote_size is not None:
        if not _multiple_of(request.quote_size, product.quote_increment):
            raise OrderRejected(
                "INVALID_SIZE_PRECISION",
                f"quote_size {request.quote_size} is not a multiple of {product.quote_increment}",
            )
        if request.quote_size < product.quote_min_size:
            raise OrderRejected(
                "INVALID_QUOTE_SIZE_TOO_SMALL", f"quote_size {request.quote_size} is below {product.quote_min_size}"
            )
    if request.limit_price is not None:
        if not _multiple_of(request.limit_price, product.quote_increment):
            raise OrderRejected(
                "INVALID_PRICE_PRECISION",
                f"limit_price {request.limit_price} is not a multiple of {product.quote_increment}",
            )
        if request.stop_price is not None and not _multiple_of(request.stop_price, product.quote_increment):
            raise OrderRejected(
                "INVALID_PRICE_PRECISION",
                f"stop_price {request.stop_price} is not a multiple of {product.quote_increment}",
            )
        if request.base_size is not None and request.base_size * request.limit_price < product.quote_min_size:
            raise OrderRejected(
                "INVALID_QUOTE_SIZE_TOO_SMALL",
                f"notional {request.base_size * request.limit_price} is below {product.quote_min_size}",
            )


def slipped_price(product: ProductSpec, *, side: Side, touch: Decimal, notional: Decimal, depth: Decimal) -> Decimal:
    """A market order walks the book: the larger its notional against the depth, the worse its price."""
    impact = min(notional / depth, Decimal(1)) * MAX_SLIPPAGE if depth > 0 else MAX_SLIPPAGE
    price = touch * (1 + impact) if side == "BUY" else touch * (1 - impact)
    return price.quantize(product.quote_increment, rounding=ROUND_UP if side == "BUY" else ROUND_DOWN)


def fee_for(notional: Decimal, fee_pct: Decimal) -> Decimal:
    """The fee on a fill, rounded up to 1e-8: the funds check, the hold and the fill all charge this figure."""
    return (notional * fee_pct / HUNDRED).quantize(FEE_STEP, rounding=ROUND_UP)


def _fill(account: Account, fill: SimFill, order: SimOrder, product: ProductSpec, fee_pct: Decimal) -> None:
    """Apply one fill to the account and the order."""
    notional = fill.price * fill.size
    fee = fee_for(notional, fee_pct)
    fill.commission = fee
    if fill.side == "BUY":
        account.move(product.quote, -(notional + fee))
        account.move(product.base, fill.size)
    else:
        account.move(product.base, -fill.size)
        account.move(product.quote, notional - fee)
    order.filled_size += fill.size
    order.filled_value += notional
    order.total_fees += fee
    order.number_of_fills += 1
    order.last_fill_time = fill.trade_time


def place(
    account: Account,
    request: OrderRequest,
    *,
    product: ProductSpec,
    bid: Decimal,
    ask: Decimal,
    depth: Decimal,
    now: float,
    maker_pct: Decimal,
    taker_pct: Decimal,
    order_id: str,
    trade_id: str,
) -> tuple[SimOrder, list[SimFill]]:
    """Accept an order: market orders fill at once with slippage and taker fees, limit orders fill if they
    cross (taker) or rest with a hold until the price comes to them (maker). Never leaves a negative balance."""
    check_product(product, request)
    order = SimOrder(
        order_id=order_id,
        client_order_id=request.client_order_id,
        product_id=request.product_id,
        side=request.side,
        order_type=request.order_type,
        configuration=request.configuration,
        created_time=now,
        base_size=request.base_size,
        quote_size=request.quote_size,
        limit_price=request.limit_price,
        post_only=request.post_only,
        time_in_force=request.time_in_force,
        end_time=request.end_time,
        stop_price=request.stop_price,
        stop_direction=request.stop_direction,
    )
    touch = ask if request.side == "BUY" else bid
    if request.order_type == "MARKET":
        notional = request.quote_size or (request.base_size or Decimal(0)) * touch
        price = slipped_price(product, side=request.side, touch=touch, notional=notional, depth=depth)
        if request.side == "BUY" and request.quote_size is not None:
            # quote_size is what the buyer spends, fees included
            spend = request.quote_size / (1 + taker_pct / HUNDRED)
            size = (spend / price).quantize(product.base_increment, rounding=ROUND_DOWN)
            if size * price + fee_for(size * price, taker_pct) > request.quote_size:
                size -= product.base_increment  # the fee rounded up must still fit in quote_size
        else:
            size = request.base_size or Decimal(0)
        if size < product.base_min_size or size <= 0:
            raise OrderRejected(
                "INVALID_BASE_SIZE_TOO_SMALL", f"{size} {product.base} is below {product.base_min_size}"
            )
        _require_funds(account, product, request.side, size=size, price=price, fee_pct=taker_pct)
        fill = SimFill(
            f"{trade_id}-e",
            trade_id,
            order_id,
            now,
            price,
            size,
            Decimal(0),
            product.product_id,
            request.side,
            "TAKER",
            request.quote_size is not None,
        )
        _fill(account, fill, order, product, taker_pct)
        order.status = "FILLED"
        return order, [fill]

    assert request.limit_price is not None and request.base_size is not None
    if request.end_time is not None and request.end_time <= now:
        raise OrderRejected("INVALID_END_TIME", f"end_time {request.end_time:.0f} is not in the future")
    if request.order_type == "STOP_LIMIT":
        _check_stop(request, last=(bid + ask) / 2)
        _rest(account, order, product, fee_pct=taker_pct)  # once triggered it may take: hold the taker fee
        return order, []
    crosses = request.limit_price >= ask if request.side == "BUY" else request.limit_price <= bid
    if crosses and request.post_only:
        raise OrderRejected(
            "INVALID_LIMIT_PRICE_POST_ONLY", f"post-only {request.side} at {request.limit_price} would take"
        )
    if crosses:
        _require_funds(account, product, request.side, size=request.base_size, price=touch, fee_pct=taker_pct)
        fill = SimFill(
            f"{trade_id}-e",
            trade_id,
            order_id,
            now,
            touch,
            request.base_size,
            Decimal(0),
            product.product_id,
            request.side,
            "TAKER",
        )
        _fill(account, fill, order, product, taker_pct)
        order.status = "FILLED"
        return order, [fill]
    if request.time_in_force in ("IOC", "FOK"):
        order.status = "CANCELLED"  # nothing to take at its price: killed at once, nothing held
        return order, []
    _rest(account, order, product, fee_pct=maker_pct)
    return order, []


def _check_stop(request: OrderRequest, *, last: Decimal) -> None:
    """A stop must lie on the side of the last price its direction triggers from, as Coinbase's preview says."""
    assert request.stop_price is not None
    if request.stop_direction == STOP_DOWN and request.stop_price >= last:
        raise OrderRejected(
            "UNKNOWN_FAILURE_REASON",
            f"stop_price {request.stop_price} of a STOP_DOWN order must be below the last price {last}",
            preview="PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE",
        )
    if request.stop_direction == STOP_UP and request.stop_price <= last:
        raise OrderRejected(
            "UNKNOWN_FAILURE_REASON",
            f"stop_price {request.stop_price} of a STOP_UP order must be above the last price {last}",
            preview="PREVIEW_STOP_PRICE_BELOW_LAST_TRADE_PRICE",
        )


def _rest(account: Account, order: SimOrder, product: ProductSpec, *, fee_pct: Decimal) -> None:
    """Hold what a resting order may spend: the quote with its fee for a buy, the base for a sell."""
    assert order.base_size is not None and order.limit_price is not None
    _require_funds(account, product, order.side, size=order.base_size, price=order.limit_price, fee_pct=fee_pct)
    if order.side == "BUY":
        notional = order.base_size * order.limit_price
        order.hold_currency = product.quote
        order.hold_amount = notional + fee_for(notional, fee_pct)
    else:
        order.hold_currency, order.hold_amount = product.base, order.base_size
    account.hold(order.hold_currency, order.hold_amount)


def _require_funds(
    account: Account, product: ProductSpec, side: Side, *, size: Decimal, price: Decimal, fee_pct: Decimal
) -> None:
    if side == "BUY":
        need, currency = size * price + fee_for(size * price, fee_pct), product.quote
    else:
        need, currency = size, product.base
    if account.available(currency) < need:
        raise OrderRejected(
            "INSUFFICIENT_FUND",
            f"insufficient {currency}: need {need.normalize()}, available {account.available(currency)}",
        )


def advance_resting(
    account: Account,
    order: SimOrder,
    product: ProductSpec,
    *,
    bid: Decimal,
    ask: Decimal,
    now: float,
    maker_pct: Decimal,
    taker_pct: Decimal,
    trade_id: str,
) -> tuple[bool, SimFill | None]:
    """Move a resting order on with the market: a GTD order expires at its end time; a stop-limit becomes a
    limit order once the price reaches its stop, and takes at once if its limit then crosses; a limit order
    fills at its price (maker) once the market crosses it. Returns (whether the order changed, its fill)."""
    if order.status != "OPEN" or order.limit_price is None or order.base_size is None:
        return False, None
    if order.end_time is not None and now >= order.end_time:
        release(account, order)
        order.status = "EXPIRED"
        return True, None
    just_triggered = False
    if order.order_type == "STOP_LIMIT" and not order.triggered:
        assert order.stop_price is not None
        last = (bid + ask) / 2
        if not (last <= order.stop_price if order.stop_direction == STOP_DOWN else last >= order.stop_price):
            return False, None
        order.triggered = just_triggered = True
    crossed = ask <= order.limit_price if order.side == "BUY" else bid >= order.limit_price
    if not crossed:
        return just_triggered, None
    release(account, order)
    touch = ask if order.side == "BUY" else bid
    price, liquidity, fee_pct = (
        (touch, "TAKER", taker_pct) if just_triggered else (order.limit_price, "MAKER", maker_pct)
    )
    fill = SimFill(
        f"{trade_id}-e",
        trade_id,
        order.order_id,
        now,
        price,
        order.base_size,
        Decimal(0),
        order.product_id,
        order.side,
        liquidity,
    )
    _fill(account, fill, order, product, fee_pct)
    order.status = "FILLED"
    return True, fill


def release(account: Account, order: SimOrder) -> None:
    """Give back what an open order held."""
    if order.hold_amount:
        account.hold(order.hold_currency, -order.hold_amount)
        order.hold_amount = Decimal(0)


def cancel(account: Account, order: SimOrder) -> str | None:
    """Cancel an open order; returns a Coinbase failure reason when it cannot be cancelled."""
    if order.status != "OPEN":
        return "DUPLICATE_CANCEL_REQUEST" if order.status == "CANCELLED" else "ORDER_IS_NOT_CANCELLABLE"
    release(account, order)
    order.status = "CANCELLED"
    return None
