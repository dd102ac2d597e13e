"""The stack's one Coinbase Advanced Trade client: quota first, a fresh JWT per private call, typed answers."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import orjson
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ValidationError

from shared.errors import InvalidRequest, RetryableError
from shared.exchange.auth import ApiKey, JwtSigner
from shared.exchange.errors import (
    AuthError,
    BadExchangeResponse,
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    RateLimited,
)
from shared.exchange.metrics import ExchangeMetrics
from shared.exchange.models import (
    AccountsPage,
    BestBidAsk,
    CancelResult,
    CancelResults,
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
    ProductListing,
    ProductsPage,
    ServerTime,
    Side,
)
from shared.exchange.responses import explain, order_refusal, parse_body, rejection, retry_after_s
from shared.exchange.retry import RetryPolicy
from shared.http import create_http_client
from shared.quota import QuotaClient
from shared.ratelimits import Priority

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Params = list[tuple[str, str]]

PREFIX = "/api/v3/brokerage"
# Coinbase documents 350 candles per request, but some callers saw exactly 350 refused.
CANDLES_PER_REQUEST = 349
MAX_CANCELS = 100
# Penalty reported to the ratelimit service when a 429 comes without any hint of how long to wait.
DEFAULT_PENALTY_S = 1.0
# Transport failures that happen before a byte of the request left: the exchange cannot have acted on them.
NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


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
    ) -> ProductsPage:
        """One page of products, from the public listing (Coinbase counts it per IP: the `public` pool)."""
        params = _params(limit=limit, offset=offset, product_type=product_type) + _repeated("product_ids", product_ids)
        return await self._call("list_products", ProductsPage, "GET", "/market/products", params=params, private=False)

    async def product_listing(self) -> list[Any]:
        """Every product as the exchange gave it, in one public call; `read_products` reads each on its own."""
        return (await self._call("list_products", ProductListing, "GET", "/market/products", private=False)).products

    async def get_product(self, product_id: str) -> Product:
        """One product, from the public endpoint (the `public` pool)."""
        path = f"/market/products/{_seg(product_id)}"
        return await self._call("get_product", Product, "GET", path, private=False)

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

    async def best_bid_ask(
        self, product_ids: Sequence[str] = (), *, at_most: Priority | None = None
    ) -> list[PriceBook]:
        """Best bid and ask of these products in one call (of every product when none are given). The committed
        ratelimits.yaml makes it critical (the bids that trigger an exit); a caller that only looks asks
        `at_most` a lower priority."""
        params = _repeated("product_ids", product_ids)
        answer = await self._call("best_bid_ask", BestBidAsk, "GET", "/best_bid_ask", params, at_most=at_most)
        return answer.pricebooks

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
        """Place an order; `client_order_id` is Coinbase's dedupe key, so retries resend the very same body.

        Raises OrderOutcomeUnknown when an attempt may have reached the exchange and the call still failed:
        the order may be live. Calling again with the same `client_order_id` and body tells (Coinbase answers a
        repeated client_order_id with the order it already has).
        """
        try:
            request = CreateOrderRequest(
                client_order_id=client_order_id, product_id=product_id, side=side, order_configuration=configuration
            )
        except ValidationError as exc:
            raise InvalidRequest(f"create_order {client_order_id!r}: {explain(exc)}") from None
        body = orjson.dumps(request.model_dump(mode="json", exclude_none=True))
        response = await self._call(
            "create_order", CreateOrderResponse, "POST", "/orders", body=body, outcome_key=client_order_id
        )
        if not response.success:
            raise order_refusal(client_order_id, response)
        return response

    async def cancel_orders(self, order_ids: Sequence[str]) -> list[CancelResult]:
        """Cancel open orders (at most 100 a call); each result says whether it was cancelled, or why not."""
        if not 0 < len(order_ids) <= MAX_CANCELS:
            raise InvalidRequest(f"cancel_orders takes 1 to {MAX_CANCELS} order ids, got {len(order_ids)}")
        body = orjson.dumps({"order_ids": list(order_ids)})
        return (await self._call("cancel_orders", CancelResults, "POST", "/orders/batch_cancel", body=body)).results

    async def get_order(self, order_id: str) -> Order:
        """One order by the exchange's order id."""
        path = f"/orders/historical/{_seg(order_id)}"
        return (await self._call("get_order", OrderEnvelope, "GET", path)).order

    async def list_orders(
        self,
        *,
        product_ids: Sequence[str] = (),
        order_status: Sequence[str] = (),
        start_date: datetime | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> OrdersPage:
        """One page of orders, newest first."""
        params = _repeated("product_ids", product_ids) + _repeated("order_status", order_status)
        since = start_date.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if start_date else None
        params += _params(start_date=since, limit=limit, cursor=cursor)
        return await self._call("list_orders", OrdersPage, "GET", "/orders/historical/batch", params)

    async def find_order(
        self,
        client_order_id: str,
        *,
        product_id: str | None = None,
        since: datetime | None = None,
        max_pages: int = 10,
        page_size: int = 250,
    ) -> Order | None:
        """The order placed with this client_order_id, paging back through the history (bounded), or None.

        Coinbase documents no client_order_id filter, so the pages are searched here; `product_id` and
        `since` narrow what is read. A None after `max_pages` full pages only means it was not found there.
        """
        cursor = None
        for _ in range(max_pages):
            page = await self.list_orders(
                product_ids=[product_id] if product_id else (), start_date=since, limit=page_size, cursor=cursor
            )
            found = next((order for order in page.orders if order.client_order_id == client_order_id), None)
            if found is not None or not page.has_next or not page.cursor:
                return found
            cursor = page.cursor
        return None

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
        outcome_key: str | None = None,
        at_most: Priority | None = None,
    ) -> M:
        """Take quota, send, retry transient failures with backoff, and parse the answer.

        With `outcome_key` (an order's client_order_id), a failure after any attempt that may have reached
        the exchange is raised as OrderOutcomeUnknown, whatever failed last.
        """
        path = PREFIX + path
        reached: list[str] = []  # the failures of attempts the exchange may have acted on
        try:
            priority = self.quota.config.priority_at_most(endpoint, at_most) if at_most else None
            return await self._attempts(endpoint, model, method, path, params, body, private, reached, priority)
        except (RetryableError, AuthError, BadExchangeResponse) as exc:
            # an answer we could not read may well be an accepted order
            if outcome_key is None or not (reached or isinstance(exc, BadExchangeResponse)):
                raise
            earlier = f"an attempt that may have reached the exchange got {reached[0]}, then " if reached else ""
            raise OrderOutcomeUnknown(
                f"{endpoint}: the order {outcome_key!r} may be live: {earlier}{exc.message}; "
                "send it again with the same client_order_id to learn its outcome",
                client_order_id=outcome_key,
                cause=exc.code,
            ) from exc

    async def _attempts(
        self,
        endpoint: str,
        model: type[M],
        method: str,
        path: str,
        params: Params | None,
        body: bytes | None,
        private: bool,
        reached: list[str],
        priority: Priority | None,
    ) -> M:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        started = self.monotonic()
        attempt = 0
        while True:
            attempt += 1
            # The endpoint's priority (orders critical, market data normal, products background) comes from
            # ratelimits.yaml, so it is set in one place; a caller may only lower it (`at_most`).
            await self.quota.take(endpoint, priority=priority)
            if private:
                headers["Authorization"] = f"Bearer {self._token(method, path)}"
            sent = self.monotonic()
            try:
                response = await self._http.request(method, path, params=params, content=body, headers=headers)
            except httpx.TransportError as exc:
                self.metrics.observe(endpoint, "error", self.monotonic() - sent)
                failure = type(exc).__name__
                if not isinstance(exc, NEVER_SENT):
                    reached.append(failure)
            else:
                self.metrics.observe(endpoint, response.status_code, self.monotonic() - sent)
                if response.status_code < 500:
                    return await self._answer(endpoint, response, model)
                failure = f"HTTP {response.status_code}"
                reached.append(failure)
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
