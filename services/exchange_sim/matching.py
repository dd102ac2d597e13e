"""Orders, fills and balances of the simulated account: Coinbase's rules as pure functions over an Account."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation
from typing import Any, Literal

from services.exchange_sim.catalog import ProductSpec

Side = Literal["BUY", "SELL"]
HUNDRED = Decimal(100)
# Price impact of a market order: MAX_SLIPPAGE at a notional equal to the depth near the touch.
MAX_SLIPPAGE = Decimal("0.05")
FEE_STEP = Decimal("1e-8")


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
    order_type: Literal["MARKET", "LIMIT"]
    configuration: dict[str, Any]
    created_time: float
    base_size: Decimal | None = None
    quote_size: Decimal | None = None
    limit_price: Decimal | None = None
    post_only: bool = False
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
            "filled_size",
            "filled_value",
            "total_fees",
            "hold_amount",
        }
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
    order_type: Literal["MARKET", "LIMIT"]
    configuration: dict[str, Any]
    base_size: Decimal | None
    quote_size: Decimal | None
    limit_price: Decimal | None
    post_only: bool


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
    if kind == "limit_limit_gtc":
        base, price = _decimal(config, "base_size", where), _decimal(config, "limit_price", where)
        if base is None or price is None:
            raise BadOrderRequest(f"{where} needs base_size and limit_price")
        post_only = config.get("post_only", False)
        if not isinstance(post_only, bool):
            raise BadOrderRequest(f"{where}.post_only must be a boolean, got {post_only!r}")
        return OrderRequest(client_order_id, product_id, side, "LIMIT", configuration, base, None, price, post_only)
    raise OrderRejected("UNSUPPORTED_ORDER_CONFIGURATION", f"order configuration {kind!r} is not supported here")


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
    _require_funds(account, product, request.side, size=request.base_size, price=request.limit_price, fee_pct=maker_pct)
    if request.side == "BUY":
        notional = request.base_size * request.limit_price
        order.hold_currency = product.quote
        order.hold_amount = notional + fee_for(notional, maker_pct)
    else:
        order.hold_currency, order.hold_amount = product.base, request.base_size
    account.hold(order.hold_currency, order.hold_amount)
    return order, []


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


def fill_resting(
    account: Account,
    order: SimOrder,
    product: ProductSpec,
    *,
    bid: Decimal,
    ask: Decimal,
    now: float,
    maker_pct: Decimal,
    trade_id: str,
) -> SimFill | None:
    """Fill a resting limit order at its price once the market has crossed it (maker)."""
    if order.status != "OPEN" or order.limit_price is None or order.base_size is None:
        return None
    crossed = ask <= order.limit_price if order.side == "BUY" else bid >= order.limit_price
    if not crossed:
        return None
    release(account, order)
    fill = SimFill(
        f"{trade_id}-e",
        trade_id,
        order.order_id,
        now,
        order.limit_price,
        order.base_size,
        Decimal(0),
        order.product_id,
        order.side,
        "MAKER",
    )
    _fill(account, fill, order, product, maker_pct)
    order.status = "FILLED"
    return fill


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
