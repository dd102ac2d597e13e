"""Coinbase Advanced Trade paths served by the simulator, plus its own /sim controls."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.exchange_sim.auth import JwtRejected, verify_jwt
from services.exchange_sim.book import order_book
from services.exchange_sim.exchange import SimExchange
from services.exchange_sim.faults import Fault
from services.exchange_sim.market import GRANULARITIES
from services.exchange_sim.matching import BadOrderRequest, SimOrder
from services.exchange_sim.runtime import SimRuntime
from services.exchange_sim.settings import Faults, SimSettings
from services.exchange_sim.store import Cursor
from services.exchange_sim.views import (
    account_json,
    candles_json,
    fill_json,
    level,
    num,
    order_json,
    product_json,
    rfc3339,
    trade_json,
)

MAX_CANDLES = 350
V2_PREFIX = "/v2/"
# The v2 API names its errors in lower case; Advanced Trade's upper-case codes map to these by status.
V2_ERROR_IDS = {400: "invalid_request", 401: "authentication_error", 404: "not_found", 429: "rate_limit_exceeded"}
BOOK_LEVELS, MAX_BOOK_LEVELS = 50, 1000
FEE_WINDOW_S = 30 * 86_400
TIMEOUT_FAULT_S = 30.0
HTML_429 = b"<html><head><title>429 Too Many Requests</title></head><body><h1>Too Many Requests</h1></body></html>"
MALFORMED = b'{"products": [{"product_id": "BTC-USD", "price": '


class CoinbaseError(Exception):
    """An error answered in Coinbase's shape: {"error", "message", "error_details"}."""

    def __init__(self, status: int, error: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message
        self.headers = headers or {}

    def response(self, path: str = "") -> JSONResponse:
        """Advanced Trade's shape, or the v2 API's `errors` list for a /v2 path."""
        if path.startswith(V2_PREFIX):
            v2_id = V2_ERROR_IDS.get(self.status, "internal_server_error") if self.error.isupper() else self.error
            body: dict[str, Any] = {"errors": [{"id": v2_id, "message": self.message}]}
        else:
            body = {"error": self.error, "message": self.message, "error_details": self.message}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class RawAnswer(Exception):
    """A fault answered as raw bytes (an HTML 429 page, a truncated JSON body)."""

    def __init__(self, status: int, body: bytes, media_type: str):
        super().__init__(status)
        self.status = status
        self.body = body
        self.media_type = media_type


def runtime(request: Request) -> SimRuntime:
    return request.app.state.sim


def exchange(request: Request) -> SimExchange:
    return request.app.state.sim.exchange


RuntimeDep = Annotated[SimRuntime, Depends(runtime)]
ExchangeDep = Annotated[SimExchange, Depends(exchange)]


async def _inject_faults(sim: SimRuntime) -> None:
    delay = sim.faults.latency_s()
    if delay:
        await asyncio.sleep(delay)
    fault = sim.faults.pick()
    if fault is None:
        return
    sim.metrics.faults.labels(fault.value).inc()
    if fault is Fault.ERROR_5XX:
        raise CoinbaseError(503, "UNAVAILABLE", "injected fault: the service is unavailable")
    if fault is Fault.TIMEOUT:
        await asyncio.sleep(TIMEOUT_FAULT_S)
        raise CoinbaseError(504, "DEADLINE_EXCEEDED", "injected fault: the request timed out")
    if fault is Fault.HTML_429:
        raise RawAnswer(429, HTML_429, "text/html")
    raise RawAnswer(200, MALFORMED, "application/json")


def _throttle(sim: SimRuntime, *, private: bool, key: str, request: Request) -> None:
    window = sim.private_window if private else sim.public_window
    result = window.hit(key, time.monotonic())
    headers = {
        "x-ratelimit-limit": str(result.limit),
        "x-ratelimit-remaining": str(result.remaining),
        "x-ratelimit-reset": str(math.ceil(time.time() + result.reset_s)),
    }
    if not result.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(result.reset_s)))
        raise CoinbaseError(
            429,
            "rate_limit_exceeded",
            "Too many requests",
            headers=headers if private else {"Retry-After": headers["Retry-After"]},
        )
    if private:
        # CallRecorder adds them to the answer, whatever the route returns
        request.state.ratelimit_headers = headers


async def public_call(request: Request, sim: RuntimeDep) -> None:
    """Faults, then Coinbase's public limit: per client IP."""
    await _inject_faults(sim)
    _throttle(sim, private=False, key=request.client.host if request.client else "unknown", request=request)


async def private_call(request: Request, sim: RuntimeDep) -> str:
    """Faults, the CDP JWT, then Coinbase's private limit: per API key. Returns the key name."""
    await _inject_faults(sim)
    try:
        key = verify_jwt(
            request.headers.get("authorization"),
            method=request.method,
            host=request.headers.get("host", ""),
            path=request.url.path,
            now=time.time(),
            public_key_pem=sim.config.jwt_public_key,
            nonces=sim.nonces,
        )
    except JwtRejected as exc:
        if request.url.path.startswith(V2_PREFIX):
            raise CoinbaseError(401, "authentication_error", str(exc)) from None
        # Advanced Trade answers a bad JWT with a bare text 401; the simulator adds why
        raise RawAnswer(401, f"Unauthorized: {exc}\n".encode(), "text/plain") from None
    _throttle(sim, private=True, key=key, request=request)
    return key


Public = [Depends(public_call)]
Private = [Depends(private_call)]
ProductIds = Annotated[list[str] | None, Query()]


class CoinbaseJSON(JSONResponse):
    """orjson straight from the route: FastAPI's encoder costs more than the market data on big answers."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


router = APIRouter(prefix="/api/v3/brokerage", tags=["coinbase"], default_response_class=CoinbaseJSON)


@router.get("/time", name="server_time", dependencies=Public, summary="Server time (the simulated clock)")
async def server_time(sim: ExchangeDep) -> CoinbaseJSON:
    now = sim.clock.now()
    return CoinbaseJSON({"iso": rfc3339(now), "epochSeconds": str(int(now)), "epochMillis": str(int(now * 1000))})


def _list_products(
    sim: SimExchange, limit: int | None, offset: int, product_type: str | None, product_ids: list[str] | None
) -> dict[str, Any]:
    products = sim.catalog
    if product_ids:
        wanted = set(product_ids)
        products = [p for p in products if p.product_id in wanted]
    if product_type and product_type.upper() != "SPOT":
        products = []
    page = products[offset : offset + limit if limit else None]
    now = sim.clock.now()
    has_next = bool(limit) and offset + len(page) < len(products)
    return {
        "products": [product_json(p, sim.market, now) for p in page],
        "num_products": len(products),
        "pagination": {
            "prev_cursor": str(max(offset - (limit or 0), 0)) if offset else "",
            "next_cursor": str(offset + len(page)) if has_next else "",
            "has_next": has_next,
            "has_prev": offset > 0,
        },
    }


@router.get("/market/products", name="list_products", dependencies=Public, summary="List products (public)")
@router.get("/products", name="list_products", dependencies=Private, summary="List products")
async def list_products(
    sim: ExchangeDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    product_type: str | None = None,
    product_ids: ProductIds = None,
) -> CoinbaseJSON:
    return CoinbaseJSON(_list_products(sim, limit, offset, product_type, product_ids))


def _product(sim: SimExchange, product_id: str) -> Any:
    product = sim.products.get(product_id)
    if product is None:
        raise CoinbaseError(404, "NOT_FOUND", f"Product {product_id} not supported")
    return product


@router.get("/market/products/{product_id}", name="get_product", dependencies=Public, summary="Get product (public)")
@router.get("/products/{product_id}", name="get_product", dependencies=Private, summary="Get product")
async def get_product(product_id: str, sim: ExchangeDep) -> CoinbaseJSON:
    return CoinbaseJSON(product_json(_product(sim, product_id), sim.market, sim.clock.now()))


def _seconds(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise CoinbaseError(400, "INVALID_ARGUMENT", f"{name} must be Unix seconds, got {value!r}") from None


@router.get(
    "/market/products/{product_id}/candles", name="get_candles", dependencies=Public, summary="Candles (public)"
)
@router.get("/products/{product_id}/candles", name="get_candles", dependencies=Private, summary="Candles")
async def get_candles(
    product_id: str, sim: ExchangeDep, start: str, end: str, granularity: str, limit: int | None = None
) -> CoinbaseJSON:
    product = _product(sim, product_id)
    if granularity not in GRANULARITIES:
        raise CoinbaseError(
            400, "INVALID_ARGUMENT", f"granularity {granularity!r} must be one of {list(GRANULARITIES)}"
        )
    first, last = _seconds(start, "start"), _seconds(end, "end")
    seconds = GRANULARITIES[granularity]
    count = (last - first) // seconds
    if last < first:
        raise CoinbaseError(400, "INVALID_ARGUMENT", f"start ({first}) must not be after end ({last})")
    if count > MAX_CANDLES or (limit is not None and not 0 < limit <= MAX_CANDLES):
        raise CoinbaseError(
            400,
            "INVALID_ARGUMENT",
            f"start and end argument is invalid - number of candles requested should be less than {MAX_CANDLES}",
        )
    candles = sim.market.candles(product_id, start=first, end=last, granularity=granularity, now=sim.clock.now())
    if limit is not None:
        candles = candles[:limit]
    return CoinbaseJSON({"candles": candles_json(candles, product)})


@router.get("/best_bid_ask", name="best_bid_ask", dependencies=Private, summary="Best bid and ask of many products")
async def best_bid_ask(sim: ExchangeDep, product_ids: ProductIds = None) -> CoinbaseJSON:
    now = sim.clock.now()
    products = [_product(sim, p) for p in product_ids] if product_ids else sim.catalog
    books = []
    for product in products:
        bid, ask = sim.touch(product, now)
        size = product.volume * 2
        books.append(
            {
                "product_id": product.product_id,
                "bids": [level(bid, size, product)],
                "asks": [level(ask, size, product)],
                "time": rfc3339(now),
            }
        )
    return CoinbaseJSON({"pricebooks": books})


@router.get("/market/product_book", name="product_book", dependencies=Public, summary="Order book (public)")
@router.get("/product_book", name="product_book", dependencies=Private, summary="Order book")
async def product_book(
    sim: ExchangeDep,
    product_id: str,
    limit: Annotated[int, Query(ge=1, le=MAX_BOOK_LEVELS)] = BOOK_LEVELS,
) -> CoinbaseJSON:
    product = _product(sim, product_id)
    now = sim.clock.now()
    bid, ask = sim.touch(product, now)
    resting = [o for o in sim.open_orders.values() if o.product_id == product_id]
    bids, asks = order_book(product, bid=bid, ask=ask, depth=sim.depth(product, now), resting=resting, levels=limit)
    mid = (bid + ask) / 2
    return CoinbaseJSON(
        {
            "pricebook": {
                "product_id": product_id,
                "bids": [level(price, size, product) for price, size in bids],
                "asks": [level(price, size, product) for price, size in asks],
                "time": rfc3339(now),
            },
            "last": num(sim.market.price(product_id, now), product.quote_increment),
            "mid_market": num(mid, product.quote_increment),
            "spread_bps": num((ask - bid) / mid * 10_000, Decimal("0.01")),
            "spread_absolute": num(ask - bid),
        }
    )


@router.get("/transaction_summary", name="transaction_summary", dependencies=Private, summary="Fee tier and volume")
async def transaction_summary(sim: ExchangeDep) -> CoinbaseJSON:
    fees, now = sim.config.fees, sim.clock.now()
    volume, paid = Decimal(0), Decimal(0)
    cursor: Cursor | None = None
    while True:
        fills, cursor = await sim.store.fills_page(
            lambda _: True, limit=1000, cursor=cursor, start=now - FEE_WINDOW_S, end=None
        )
        volume += sum((f.price * f.size for f in fills), Decimal(0))
        paid += sum((f.commission for f in fills), Decimal(0))
        if cursor is None:
            break
    return CoinbaseJSON(
        {
            "total_volume": float(volume),
            "total_fees": float(paid),
            "fee_tier": {
                "pricing_tier": "Simulator",
                "usd_from": "0",
                "usd_to": "",
                "taker_fee_rate": num(fees.taker_pct / 100),
                "maker_fee_rate": num(fees.maker_pct / 100),
                "aop_from": "",
                "aop_to": "",
            },
            "margin_rate": None,
            "goods_and_services_tax": None,
            "advanced_trade_only_volume": float(volume),
            "advanced_trade_only_fees": float(paid),
            "coinbase_pro_volume": 0,
            "coinbase_pro_fees": 0,
            "total_balance": "",
            "has_promo_fee": False,
        }
    )


@router.get(
    "/market/products/{product_id}/ticker", name="market_trades", dependencies=Public, summary="Trades (public)"
)
@router.get("/products/{product_id}/ticker", name="market_trades", dependencies=Private, summary="Market trades")
async def market_trades(
    product_id: str, sim: ExchangeDep, limit: Annotated[int, Query(ge=1, le=100)] = 100
) -> CoinbaseJSON:
    product = _product(sim, product_id)
    now = sim.clock.now()
    bid, ask = sim.touch(product, now)
    return CoinbaseJSON(
        {
            "trades": [trade_json(t, product) for t in sim.market.trades(product_id, now, limit)],
            "best_bid": str(bid),
            "best_ask": str(ask),
        }
    )


@router.post("/orders", name="create_order", dependencies=Private, summary="Create an order")
async def create_order(request: Request, sim: ExchangeDep, state: RuntimeDep) -> CoinbaseJSON:
    try:
        body = orjson.loads(await request.body())
        result = await sim.place_order(body)
    except (orjson.JSONDecodeError, BadOrderRequest) as exc:
        state.metrics.order("rejected", "INVALID_ARGUMENT")
        raise CoinbaseError(400, "INVALID_ARGUMENT", str(exc)) from None
    if result.rejected is not None:
        failure = result.rejected
        state.metrics.order("rejected", failure.error)
        return CoinbaseJSON(
            {
                "success": False,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": "",
                "error_response": {
                    "error": failure.error,
                    "message": failure.message,
                    "error_details": failure.message,
                    "preview_failure_reason": failure.preview,
                    "new_order_failure_reason": failure.error,
                },
                "order_configuration": body.get("order_configuration"),
            }
        )
    assert result.order is not None
    order = result.order
    state.metrics.order("repeated" if result.repeated else ("open" if order.status == "OPEN" else "filled"))
    return CoinbaseJSON(
        {
            "success": True,
            "failure_reason": "UNKNOWN_FAILURE_REASON",
            "order_id": order.order_id,
            "success_response": {
                "order_id": order.order_id,
                "product_id": order.product_id,
                "side": order.side,
                "client_order_id": order.client_order_id,
                "attached_order_id": "",
            },
            "order_configuration": order.configuration,
        }
    )


@router.post("/orders/batch_cancel", name="cancel_orders", dependencies=Private, summary="Cancel orders")
async def cancel_orders(request: Request, sim: ExchangeDep) -> CoinbaseJSON:
    try:
        body = orjson.loads(await request.body())
        order_ids = body["order_ids"]
        if not isinstance(order_ids, list) or not all(isinstance(i, str) for i in order_ids):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise CoinbaseError(400, "INVALID_ARGUMENT", 'body must be {"order_ids": ["..."]}') from None
    results = await sim.cancel_orders(order_ids)
    return CoinbaseJSON(
        {
            "results": [
                {"success": reason is None, "failure_reason": reason or "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": i}
                for i, reason in results
            ]
        }
    )


def _page(items: list[Any], limit: int, cursor: str | None) -> tuple[list[Any], bool, str]:
    offset = _offset(cursor)
    page = items[offset : offset + limit]
    has_next = offset + limit < len(items)
    return page, has_next, str(offset + limit) if has_next else ""


def _offset(cursor: str | None) -> int:
    try:
        offset = int(cursor) if cursor else 0
    except ValueError:
        offset = -1
    if offset < 0:
        raise CoinbaseError(400, "INVALID_ARGUMENT", f"cursor {cursor!r} is not valid")
    return offset


def _cursor(cursor: str | None) -> Cursor | None:
    if not cursor:
        return None
    try:
        return Cursor.parse(cursor)
    except ValueError:
        raise CoinbaseError(400, "INVALID_ARGUMENT", f"cursor {cursor!r} is not valid") from None


def _instant(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CoinbaseError(400, "INVALID_ARGUMENT", f"{name} must be an RFC 3339 time, got {value!r}") from None


def _wanted(values: list[str] | None) -> Callable[[str], bool]:
    wanted = set(values or ())
    return (lambda value: value in wanted) if wanted else (lambda _: True)


@router.get("/orders/historical/batch", name="list_orders", dependencies=Private, summary="List orders")
async def list_orders(
    sim: ExchangeDep,
    order_ids: ProductIds = None,
    product_ids: ProductIds = None,
    product_id: str | None = None,
    order_status: ProductIds = None,
    order_side: str | None = None,
    client_order_id: str | None = None,
    start_date: str | None = None,
    end_date: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> CoinbaseJSON:
    by_id, by_status = _wanted(order_ids), _wanted(order_status)
    by_product = _wanted([*(product_ids or ()), *([product_id] if product_id else ())])

    def keep(order: SimOrder) -> bool:
        return (
            by_id(order.order_id)
            and by_product(order.product_id)
            and by_status(order.status)
            and (order_side is None or order.side == order_side)
            and (client_order_id is None or order.client_order_id == client_order_id)
        )

    orders, following = await sim.store.orders_page(
        keep,
        limit=limit,
        cursor=_cursor(cursor),
        start=_instant(start_date, "start_date"),
        end=_instant(end_date, "end_date"),
    )
    return CoinbaseJSON(
        {
            "orders": [order_json(o) for o in orders],
            "sequence": "0",
            "has_next": following is not None,
            "cursor": "" if following is None else str(following),
        }
    )


@router.get("/orders/historical/fills", name="list_fills", dependencies=Private, summary="List fills")
async def list_fills(
    sim: ExchangeDep,
    order_ids: ProductIds = None,
    trade_ids: ProductIds = None,
    product_ids: ProductIds = None,
    product_id: str | None = None,
    start_sequence_timestamp: str | None = None,
    end_sequence_timestamp: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> CoinbaseJSON:
    by_order, by_trade = _wanted(order_ids), _wanted(trade_ids)
    by_product = _wanted([*(product_ids or ()), *([product_id] if product_id else ())])
    fills, following = await sim.store.fills_page(
        lambda fill: by_order(fill.order_id) and by_trade(fill.trade_id) and by_product(fill.product_id),
        limit=limit,
        cursor=_cursor(cursor),
        start=_instant(start_sequence_timestamp, "start_sequence_timestamp"),
        end=_instant(end_sequence_timestamp, "end_sequence_timestamp"),
    )
    return CoinbaseJSON({"fills": [fill_json(f) for f in fills], "cursor": "" if following is None else str(following)})


@router.get("/orders/historical/{order_id}", name="get_order", dependencies=Private, summary="Get an order")
async def get_order(order_id: str, sim: ExchangeDep) -> CoinbaseJSON:
    order = await sim.order(order_id)
    if order is None:
        raise CoinbaseError(404, "unknown", "order with this orderID was not found")  # Coinbase's words
    return CoinbaseJSON({"order": order_json(order)})


@router.get("/accounts", name="accounts", dependencies=Private, summary="List accounts")
async def accounts(
    sim: ExchangeDep, limit: Annotated[int, Query(ge=1, le=250)] = 49, cursor: str | None = None
) -> CoinbaseJSON:
    currencies = sorted(set(sim.account.balances) | set(sim.account.holds))
    page, has_next, next_cursor = _page(currencies, limit, cursor)
    return CoinbaseJSON(
        {
            "accounts": [account_json(c, sim.account, sim.clock.origin) for c in page],
            "has_next": has_next,
            "cursor": next_cursor,
            "size": len(page),
        }
    )


sim_router = APIRouter(prefix="/sim", tags=["simulator"])
config_router = APIRouter(prefix="/v1", tags=["simulator"])


@config_router.get("/config", summary="The validated simulator configuration in force (YAML plus environment)")
async def get_config(request: Request) -> dict[str, Any]:
    settings: SimSettings = request.app.state.settings
    return {"exchange_sim": settings.exchange_sim, "sim_speed": settings.sim_speed, "sim_seed": settings.sim_seed}


@sim_router.get("/stats", summary="What the simulator saw: requests, 429s, orders, repeated client order ids")
async def stats(state: RuntimeDep) -> dict[str, Any]:
    return state.metrics.snapshot()


@sim_router.get("/faults", summary="Faults in force")
async def get_faults(state: RuntimeDep) -> Faults:
    return state.faults.faults


@sim_router.post("/faults", summary="Change the injected faults (token)")
async def set_faults(body: Faults, state: RuntimeDep) -> Faults:
    state.faults.faults = body
    return body
