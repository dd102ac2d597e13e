"""The stack's one Coinbase Advanced Trade client: quota first, a fresh JWT per private call, typed answers."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import quote

import httpx
import orjson
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidRequest
from shared.exchange.auth import ApiKey, JwtSigner
from shared.exchange.errors import AuthError, ExchangeUnavailable, RateLimited
from shared.exchange.metrics import ExchangeMetrics
from shared.exchange.models import (
    AccountsPage,
    BestBidAsk,
    Candle,
    CandlesPage,
    CreateOrderRequest,
    CreateOrderResponse,
    FillsPage,
    Granularity,
    MarketTrades,
    Order,
    OrderConfiguration,
    OrderEnvelope,
    OrdersPage,
    PriceBook,
    Product,
    ProductsPage,
    ServerTime,
    Side,
)
from shared.exchange.responses import explain, order_refusal, parse_body, rejection, retry_after_s
from shared.exchange.retry import RetryPolicy
from shared.http import create_http_client
from shared.quota import QuotaClient

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Params = list[tuple[str, str]]

PREFIX = "/api/v3/brokerage"
# Coinbase documents 350 candles per request, but some callers saw exactly 350 refused.
CANDLES_PER_REQUEST = 349
# Penalty reported to the ratelimit service when a 429 comes without any hint of how long to wait.
DEFAULT_PENALTY_S = 1.0


class ExchangeClient:
    """Async client of the Coinbase Advanced Trade REST API (or the simulator, given its base URL)."""

    def __init__(
        self,
        *,
        base_url: str,
        quota: QuotaClient,
        registry: CollectorRegistry,
        api_key: ApiKey | None = None,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ):
        url = httpx.URL(base_url)
        self.host = f"{url.host}:{url.port}" if url.port else url.host
        self.quota = quota
        self.metrics = ExchangeMetrics(registry)
        self.key_name = api_key.name if api_key else ""
        self._signer = JwtSigner(api_key, clock=clock) if api_key else None
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.monotonic = monotonic
        self.sleep = sleep
        self.rng = rng or random.Random()
        self._http = create_http_client(base_url=base_url, timeout_s=timeout_s)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def list_products(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        product_type: str | None = None,
        product_ids: Sequence[str] = (),
        private: bool = False,
    ) -> ProductsPage:
        """One page of products, from the public listing unless `private`."""
        params = _params(limit=limit, offset=offset, product_type=product_type) + _repeated("product_ids", product_ids)
        path = "/products" if private else "/market/products"
        return await self._call("list_products", ProductsPage, "GET", path, params=params, private=private)

    async def get_product(self, product_id: str, *, private: bool = False) -> Product:
        """One product, from the public endpoint unless `private`."""
        path = f"/products/{_seg(product_id)}" if private else f"/market/products/{_seg(product_id)}"
        return await self._call("get_product", Product, "GET", path, private=private)

    async def get_candles(
        self, product_id: str, *, start: int, end: int, granularity: Granularity | str
    ) -> list[Candle]:
        """Candles between `start` and `end` (Unix seconds), newest first, fetched in pages of 349."""
        granularity = Granularity(granularity)
        if end <= start:
            raise InvalidRequest(f"get_candles: end ({end}) must be after start ({start})")
        window = CANDLES_PER_REQUEST * granularity.seconds
        by_start: dict[int, Candle] = {}
        window_end = end
        while window_end > start:
            window_start = max(start, window_end - window)
            params = [("start", str(window_start)), ("end", str(window_end)), ("granularity", granularity.value)]
            page = await self._call("get_candles", CandlesPage, "GET", f"/products/{_seg(product_id)}/candles", params)
            for candle in page.candles:
                by_start.setdefault(candle.start, candle)
            window_end = window_start
        return sorted(by_start.values(), key=lambda candle: candle.start, reverse=True)

    async def best_bid_ask(self, product_ids: Sequence[str] = ()) -> list[PriceBook]:
        """Best bid and ask of these products in one call (of every product when none are given)."""
        params = _repeated("product_ids", product_ids)
        return (await self._call("best_bid_ask", BestBidAsk, "GET", "/best_bid_ask", params)).pricebooks

    async def market_trades(self, product_id: str, *, limit: int = 100) -> MarketTrades:
        """The latest trades (at most 100) with the best bid and ask."""
        path = f"/products/{_seg(product_id)}/ticker"
        return await self._call("market_trades", MarketTrades, "GET", path, _params(limit=limit))

    async def server_time(self) -> ServerTime:
        """The exchange's clock."""
        return await self._call("server_time", ServerTime, "GET", "/time", private=False)

    async def create_order(
        self, *, client_order_id: str, product_id: str, side: Side, configuration: OrderConfiguration
    ) -> CreateOrderResponse:
        """Place an order; `client_order_id` is Coinbase's dedupe key, so retries resend the very same body."""
        try:
            request = CreateOrderRequest(
                client_order_id=client_order_id, product_id=product_id, side=side, order_configuration=configuration
            )
        except ValidationError as exc:
            raise InvalidRequest(f"create_order {client_order_id!r}: {explain(exc)}") from None
        body = orjson.dumps(request.model_dump(mode="json", exclude_none=True))
        response = await self._call("create_order", CreateOrderResponse, "POST", "/orders", body=body)
        if not response.success:
            raise order_refusal(client_order_id, response)
        return response

    async def get_order(self, order_id: str) -> Order:
        """One order by the exchange's order id."""
        path = f"/orders/historical/{_seg(order_id)}"
        return (await self._call("get_order", OrderEnvelope, "GET", path)).order

    async def list_orders(
        self,
        *,
        client_order_id: str | None = None,
        product_ids: Sequence[str] = (),
        order_status: Sequence[str] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> OrdersPage:
        """One page of orders; with `client_order_id`, only that order's entries of the page."""
        params = _repeated("product_ids", product_ids) + _repeated("order_status", order_status)
        params += _params(limit=limit, cursor=cursor)
        page = await self._call("list_orders", OrdersPage, "GET", "/orders/historical/batch", params)
        if client_order_id is not None:
            # The list endpoint documents no client_order_id filter, so an unknown parameter could be
            # ignored and return other orders: filter here instead of trusting the server.
            page.orders = [order for order in page.orders if order.client_order_id == client_order_id]
        return page

    async def list_fills(
        self,
        *,
        order_ids: Sequence[str] = (),
        product_ids: Sequence[str] = (),
        limit: int | None = None,
        cursor: str | None = None,
    ) -> FillsPage:
        """One page of fills, filtered by order and product ids."""
        params = _repeated("order_ids", order_ids) + _repeated("product_ids", product_ids)
        params += _params(limit=limit, cursor=cursor)
        return await self._call("list_fills", FillsPage, "GET", "/orders/historical/fills", params)

    async def accounts(self, *, cursor: str | None = None, limit: int = 250) -> AccountsPage:
        """One page of accounts (balances and holds)."""
        return await self._call("accounts", AccountsPage, "GET", "/accounts", _params(limit=limit, cursor=cursor))

    async def _call(
        self,
        endpoint: str,
        model: type[M],
        method: str,
        path: str,
        params: Params | None = None,
        *,
        body: bytes | None = None,
        private: bool = True,
    ) -> M:
        """Take quota, send, retry transient failures with backoff, and parse the answer."""
        path = PREFIX + path
        headers = {"Content-Type": "application/json"} if body is not None else {}
        started = self.monotonic()
        attempt = 0
        while True:
            attempt += 1
            # The endpoint's priority (orders critical, market data normal, products and accounts
            # background) comes from ratelimits.yaml, so it is set in one place.
            await self.quota.take(endpoint)
            if private:
                headers["Authorization"] = f"Bearer {self._token(method, path)}"
            sent = self.monotonic()
            try:
                response = await self._http.request(method, path, params=params, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.metrics.observe(endpoint, "error", self.monotonic() - sent)
                failure = type(exc).__name__
            else:
                self.metrics.observe(endpoint, response.status_code, self.monotonic() - sent)
                if response.status_code < 500:
                    return await self._answer(endpoint, response, model)
                failure = f"HTTP {response.status_code}"
            delay = self.retry.delay(attempt, self.rng)
            if attempt >= self.retry.max_attempts or self.monotonic() - started + delay > self.retry.budget_s:
                raise ExchangeUnavailable(
                    f"{endpoint}: {method} {path} failed with {failure} after {attempt} attempt(s)",
                    details={"endpoint": endpoint, "attempts": attempt, "last_failure": failure},
                )
            log.warning("%s: %s on attempt %d, retrying in %.2fs", endpoint, failure, attempt, delay)
            await self.sleep(delay)

    async def _answer(self, endpoint: str, response: httpx.Response, model: type[M]) -> M:
        status = response.status_code
        if status == 429:
            delay = retry_after_s(response, now=self.clock())
            self.metrics.rate_limited.labels(endpoint).inc()
            await self.quota.report_penalty(
                endpoint=endpoint, retry_after_ms=(DEFAULT_PENALTY_S if delay is None else delay) * 1000
            )
            hint = f"retry after {delay:.1f}s" if delay is not None else "no retry hint given"
            raise RateLimited(
                f"{endpoint}: the exchange rate-limited the call ({hint})", endpoint=endpoint, retry_after_s=delay
            )
        if status in (401, 403):
            reason = rejection(endpoint, response)
            raise AuthError(
                f"{endpoint}: the exchange refused API key {self.key_name!r} with {status}: "
                f"{reason.error_message or reason.error or 'no reason given'}",
                key_name=self.key_name,
            )
        if status >= 400:
            raise rejection(endpoint, response)
        return parse_body(endpoint, response, model)

    def _token(self, method: str, path: str) -> str:
        if self._signer is None:
            raise AuthError(f"{method} {path} needs an API key and this client has none", key_name="")
        return self._signer.token(method, self.host, path)


def _params(**values: object) -> Params:
    return [(name, str(value)) for name, value in values.items() if value is not None]


def _repeated(name: str, values: Sequence[str]) -> Params:
    return [(name, value) for value in values]


def _seg(value: str) -> str:
    return quote(value, safe="")
