"""Exchange fuzzing: truncated, wrongly typed, empty and incomplete Coinbase answers.

The exchange client against crafted answers (respx, as in test_exchange_client_recorded, with its quota from a
real ratelimit process): for every endpoint method, each answer that does not fit the documented shape must raise
BadExchangeResponse naming the field (an order's unreadable answer: OrderOutcomeUnknown caused by it), an error
status the documented error, a body cut off on the wire the documented retries; never another exception. Then
the real simulator answering garbage (`malformed_json_fraction`): the universe service keeps running, serves its
last good list, and recovers when the faults go off.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import hypothesis
import orjson
import pytest
import redis
import respx
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from shared import settings as shared_settings
from shared.exchange import (
    AuthError,
    BadExchangeResponse,
    ExchangeClient,
    ExchangeRejected,
    ExchangeUnavailable,
    OrderOutcomeUnknown,
    RateLimited,
)
from shared.exchange.factory import throwaway_key
from shared.exchange.models import (
    AccountsPage,
    BestBidAsk,
    CancelResults,
    CandlesPage,
    CreateOrderResponse,
    FillsPage,
    MarketIoc,
    MarketTrades,
    OrderConfiguration,
    OrderEnvelope,
    OrdersPage,
    Product,
    ProductsPage,
    ServerTime,
)
from shared.exchange.responses import read_products
from shared.quota import QuotaClient
from shared.ratelimits import RateLimitConfig
from tests.conftest import StackFactory, bounded_examples, generous_ratelimit

pytestmark = pytest.mark.integration

BASE = "http://127.0.0.1:8010"
API = f"{BASE}/api/v3/brokerage"
NOW = 1_700_000_000
TOKEN = "fuzz-test-token"
MAX_EXAMPLES = 25

# Answers in Coinbase's documented shapes (numbers as strings).
PRODUCT = {
    "product_id": "BTC-USD",
    "price": "70123.45",
    "price_percentage_change_24h": "-1.5",
    "volume_24h": "1234.5678",
    "base_increment": "0.00000001",
    "quote_increment": "0.01",
    "quote_min_size": "1",
    "base_currency_id": "BTC",
    "quote_currency_id": "USD",
    "product_type": "SPOT",
    "status": "online",
    "trading_disabled": False,
    "alias_to": ["BTC-USDC"],
}
ORDER = {
    "order_id": "o-1",
    "product_id": "BTC-USD",
    "order_configuration": {"market_market_ioc": {"quote_size": "10"}},
    "side": "BUY",
    "client_order_id": "coid-1",
    "status": "FILLED",
    "created_time": "2024-01-15T10:00:00Z",
    "filled_size": "0.0001",
    "average_filled_price": "70000",
    "number_of_fills": "1",
    "total_fees": "0.06",
    "size_in_quote": True,
    "edit_history": [{"price": "1", "size": "2", "replace_accept_timestamp": "2024-01-15T10:00:00Z"}],
}
FILL = {
    "trade_id": "t-1",
    "order_id": "o-1",
    "trade_time": "2024-01-15T10:00:01.123456Z",
    "price": "70000",
    "size": "10",
    "commission": "0.06",
    "product_id": "BTC-USD",
    "size_in_quote": True,
}
ACCOUNT = {
    "uuid": "8bfc20d7-f7c6-4422-bf07-8243ca4169fe",
    "currency": "BTC",
    "available_balance": {"value": "1.25", "currency": "BTC"},
    "hold": {"value": "0.05", "currency": "BTC"},
}
BOOK = {
    "product_id": "BTC-USD",
    "bids": [{"price": "70000.01", "size": "0.5"}],
    "asks": [{"price": "70000.02", "size": "1"}],
}
TRADE = {
    "trade_id": "1",
    "product_id": "BTC-USD",
    "price": "70000",
    "size": "0.1",
    "time": "2024-01-15T10:00:00Z",
    "side": "SELL",
}
MARKET_ORDER = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))

Call = Callable[[ExchangeClient], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One method of the client, the answer it reads, and where respx serves it."""

    call: Call
    model: type[BaseModel]
    body: dict[str, Any]
    method: str
    path: str


ENDPOINTS: dict[str, Endpoint] = {
    "list_products": Endpoint(
        lambda c: c.list_products(),
        ProductsPage,
        {"products": [PRODUCT], "num_products": 1, "pagination": {"has_next": False, "next_cursor": ""}},
        "GET",
        "/market/products",
    ),
    "get_product": Endpoint(lambda c: c.get_product("BTC-USD"), Product, PRODUCT, "GET", "/market/products/BTC-USD"),
    "server_time": Endpoint(
        lambda c: c.server_time(),
        ServerTime,
        {"iso": "2023-11-14T22:13:20Z", "epochSeconds": "1700000000", "epochMillis": "1700000000000"},
        "GET",
        "/time",
    ),
    "get_candles": Endpoint(
        lambda c: c.get_candles("BTC-USD", start=NOW - 120, end=NOW, granularity="ONE_MINUTE"),
        CandlesPage,
        {"candles": [{"start": str(NOW - 60), "low": "1", "high": "2", "open": "1.5", "close": "1.75", "volume": "9"}]},
        "GET",
        "/products/BTC-USD/candles",
    ),
    "best_bid_ask": Endpoint(
        lambda c: c.best_bid_ask(["BTC-USD"]), BestBidAsk, {"pricebooks": [BOOK]}, "GET", "/best_bid_ask"
    ),
    "market_trades": Endpoint(
        lambda c: c.market_trades("BTC-USD"),
        MarketTrades,
        {"trades": [TRADE], "best_bid": "69999.99", "best_ask": "70000.01"},
        "GET",
        "/products/BTC-USD/ticker",
    ),
    "create_order": Endpoint(
        lambda c: c.create_order(client_order_id="c-1", product_id="BTC-USD", side="BUY", configuration=MARKET_ORDER),
        CreateOrderResponse,
        {
            "success": True,
            "success_response": {"order_id": "o-1", "product_id": "BTC-USD", "side": "BUY", "client_order_id": "c-1"},
            "order_configuration": {"market_market_ioc": {"quote_size": "10"}},
        },
        "POST",
        "/orders",
    ),
    "cancel_orders": Endpoint(
        lambda c: c.cancel_orders(["o-1"]),
        CancelResults,
        {"results": [{"success": True, "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": "o-1"}]},
        "POST",
        "/orders/batch_cancel",
    ),
    "get_order": Endpoint(
        lambda c: c.get_order("o-1"), OrderEnvelope, {"order": ORDER}, "GET", "/orders/historical/o-1"
    ),
    "list_orders": Endpoint(
        lambda c: c.list_orders(),
        OrdersPage,
        {"orders": [ORDER], "has_next": False, "cursor": ""},
        "GET",
        "/orders/historical/batch",
    ),
    "find_order": Endpoint(
        lambda c: c.find_order("coid-1"),
        OrdersPage,
        {"orders": [ORDER], "has_next": False, "cursor": ""},
        "GET",
        "/orders/historical/batch",
    ),
    "list_fills": Endpoint(
        lambda c: c.list_fills(), FillsPage, {"fills": [FILL], "cursor": ""}, "GET", "/orders/historical/fills"
    ),
    "accounts": Endpoint(
        lambda c: c.accounts(),
        AccountsPage,
        {"accounts": [ACCOUNT], "has_next": False, "cursor": "", "size": 1},
        "GET",
        "/accounts",
    ),
}


def test_every_endpoint_method_of_the_client_is_fuzzed() -> None:
    public = {name for name in dir(ExchangeClient) if not name.startswith("_")}
    not_calls = {"aclose", "product_listing"}  # product_listing has its own test below
    assert public - not_calls == set(ENDPOINTS)


# Where the answer can go wrong: the declared places in each body, from the model.


@dataclass(frozen=True)
class Place:
    path: tuple[str | int, ...]
    kind: str  # scalar, list, object
    required: bool

    @property
    def field(self) -> str:
        """As BadExchangeResponse names it: products[3].price."""
        text = ""
        for part in self.path:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
        return text


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def places(model: type[BaseModel], data: Any, path: tuple[str | int, ...] = ()) -> Iterator[Place]:
    """Every place of `data` the model declares, with what it holds and whether it must be there."""
    for name, info in model.model_fields.items():
        key = info.alias or name
        if not isinstance(data, dict) or key not in data:
            continue
        yield from _places(_unwrap(info.annotation), data[key], (*path, key), info.is_required())


def _places(tp: Any, value: Any, path: tuple[str | int, ...], required: bool) -> Iterator[Place]:
    origin = typing.get_origin(tp)
    if tp is Any:
        return
    if origin is list:
        yield Place(path, "list", required)
        (item,) = typing.get_args(tp)
        for index, element in enumerate(value if isinstance(value, list) else []):
            yield from _places(_unwrap(item), element, (*path, index), False)
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        yield Place(path, "object", required)
        yield from places(tp, value, path)
    elif origin is None:
        yield Place(path, "scalar", required)


# Values that fit no declared type of that place.
WRONG = {
    "scalar": st.sampled_from([{"x": [1]}, [1, 2], [], {}]),
    "list": st.sampled_from(["not a list", {"x": 1}, 5, True]),
    "object": st.sampled_from([[1, 2], "text", 5, True]),
}


def mutated(body: dict[str, Any], place: Place, value: Any, *, delete: bool = False) -> dict[str, Any]:
    copy = json.loads(json.dumps(body))
    node = copy
    for part in place.path[:-1]:
        node = node[part]
    if delete:
        del node[place.path[-1]]
    else:
        node[place.path[-1]] = value
    return copy


# The client, its quota from a real ratelimit service.


class Ratelimit:
    def __init__(self, url: str, config: RateLimitConfig, client: redis.Redis, prefix: str):
        self.url, self.config, self.redis, self.prefix = url, config, client, prefix

    def lift_penalties(self) -> None:
        """Open the pools a 429 example closed (a garbage Retry-After may close them for an hour)."""
        for pool in self.config.pools:
            self.redis.hdel(f"{self.prefix}ratelimit:pool:{pool}", "blocked_until")


@pytest.fixture(scope="module")
def ratelimit_service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ratelimit]:
    """One ratelimit process for the module, its own key prefix, pools too generous to ever wait."""
    with generous_ratelimit(redis_url, tmp_path_factory.mktemp("config"), TOKEN, 100000) as (stack, limits):
        client = redis.Redis.from_url(redis_url)
        try:
            config = RateLimitConfig.model_validate(limits["ratelimit"])
            yield Ratelimit(stack.url("ratelimit"), config, client, stack.extra_env["KEY_PREFIX"])
        finally:
            client.close()


async def no_sleep(_: float) -> None:
    return None


class Driver:
    """The client on an event loop of its own: hypothesis drives sync tests, each example runs its call here."""

    def __init__(self, ratelimit: Ratelimit):
        self.loop = asyncio.new_event_loop()
        self.quota = QuotaClient(
            base_url=ratelimit.url, token=TOKEN, config=ratelimit.config, client_id="fuzz", registry=CollectorRegistry()
        )
        self.client = ExchangeClient(
            base_url=BASE,
            quota=self.quota,
            registry=CollectorRegistry(),
            api_key=throwaway_key(),
            clock=lambda: NOW,
            sleep=no_sleep,  # the retries' pauses, not waited here
        )

    def outcome(self, endpoint: Endpoint, answer: httpx.Response | Exception | Callable[..., Any]) -> Exception | None:
        """What the call raised (None when it returned) with `answer` to every request it sends."""
        return self.loop.run_until_complete(self._outcome(endpoint, answer))

    async def _outcome(
        self, endpoint: Endpoint, answer: httpx.Response | Exception | Callable[..., Any]
    ) -> Exception | None:
        with respx.mock(assert_all_called=False) as router:
            route = router.route(method=endpoint.method, url=f"{API}{endpoint.path}")
            if isinstance(answer, httpx.Response):
                route.mock(return_value=answer)
            else:
                route.mock(side_effect=answer)
            try:
                await endpoint.call(self.client)
            except Exception as exc:
                return exc
        return None

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.quota.aclose())
        self.loop.close()


@pytest.fixture
def driver(ratelimit_service: Ratelimit) -> Iterator[Driver]:
    driver = Driver(ratelimit_service)
    try:
        yield driver
    finally:
        driver.close()
    assert not driver.quota.in_fallback, "quota came from the local fallback limiter, not the ratelimit service"


def fuzz(max_examples: int = MAX_EXAMPLES) -> hypothesis.settings:
    return bounded_examples(max_examples)


def unreadable(name: str, exc: BaseException | None) -> BadExchangeResponse:
    """The BadExchangeResponse behind an unreadable answer: itself, or for an order the cause of the unknown
    outcome (an order whose answer could not be read may be live)."""
    if name == "create_order":
        assert isinstance(exc, OrderOutcomeUnknown), repr(exc)
        assert exc.client_order_id == "c-1" and exc.details["cause"] == "bad_exchange_response", exc.details
        exc = exc.__cause__
    assert isinstance(exc, BadExchangeResponse), repr(exc)
    assert exc.endpoint == ("list_orders" if name == "find_order" else name), exc.endpoint
    return exc


@pytest.mark.parametrize("name", ENDPOINTS)
def test_the_unmodified_answer_is_read(name: str, driver: Driver) -> None:
    endpoint = ENDPOINTS[name]
    assert driver.outcome(endpoint, httpx.Response(200, json=endpoint.body)) is None


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_wrongly_typed_or_missing_field_is_named(name: str, driver: Driver) -> None:
    endpoint = ENDPOINTS[name]
    where = list(places(endpoint.model, endpoint.body))
    assert where, name

    @fuzz()
    @hypothesis.given(place=st.sampled_from(where), data=st.data())
    def check(place: Place, data: st.DataObject) -> None:
        delete = place.required and data.draw(st.booleans(), label="delete")
        value = None if delete else data.draw(WRONG[place.kind], label="value")
        body = mutated(endpoint.body, place, value, delete=delete)
        exc = unreadable(name, driver.outcome(endpoint, httpx.Response(200, json=body)))
        assert exc.field == place.field, (exc.field, place.field, exc.message)
        assert place.field in exc.message and ("is missing" in exc.message) == delete, exc.message

    check()


GARBAGE = [
    b"",
    b" ",
    b"null",
    b"[]",
    b'"text"',
    b"1",
    b"true",
    b"<html><body>502 Bad Gateway</body></html>",
    b"\xff\xfe",
]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_truncated_empty_or_non_object_answer_is_a_bad_response(name: str, driver: Driver) -> None:
    endpoint = ENDPOINTS[name]
    full = orjson.dumps(endpoint.body)

    @fuzz()
    @hypothesis.given(
        content=st.one_of(st.integers(0, len(full) - 1).map(lambda cut: full[:cut]), st.sampled_from(GARBAGE))
    )
    def check(content: bytes) -> None:
        answer = httpx.Response(200, content=content, headers={"Content-Type": "application/json"})
        exc = unreadable(name, driver.outcome(endpoint, answer))
        assert exc.field in (None, ""), exc.field  # nothing to name: the body itself
        assert "not JSON" in exc.message or "(body)" in exc.message, exc.message

    check()


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_body_cut_off_on_the_wire_is_retried(name: str, driver: Driver) -> None:
    """The connection dropping mid-body is a transport error: retried within the bounds, then
    ExchangeUnavailable (an order: OrderOutcomeUnknown, it may have reached the exchange)."""
    endpoint = ENDPOINTS[name]
    cut = httpx.RemoteProtocolError("peer closed connection without sending complete message body")
    answers: Iterator[Exception] = iter([cut])

    def once_then_whole(request: httpx.Request) -> httpx.Response:
        error = next(answers, None)
        if error is not None:
            raise error
        return httpx.Response(200, json=endpoint.body)

    assert driver.outcome(endpoint, once_then_whole) is None
    exc = driver.outcome(endpoint, cut)
    expected = OrderOutcomeUnknown if name == "create_order" else ExchangeUnavailable
    assert isinstance(exc, expected), repr(exc)
    assert "RemoteProtocolError" in exc.message, exc.message


# Error statuses with garbage bodies and headers: the documented error, never another exception.

HEADER_VALUES = [
    "",
    "abc",
    "nan",
    "inf",
    "-inf",
    "1e999",
    "-5",
    "99999999999999999999",
    "1.5",
    "Wed, 21 Oct 2015 07:28:00 GMT",
]
EXPECTED_FOR_STATUS: dict[int, type[Exception]] = {
    400: ExchangeRejected,
    401: AuthError,
    403: AuthError,
    404: ExchangeRejected,
    409: ExchangeRejected,
    429: RateLimited,
    500: ExchangeUnavailable,
    502: ExchangeUnavailable,
    503: ExchangeUnavailable,
}


@pytest.mark.parametrize("name", ENDPOINTS)
def test_error_statuses_with_garbage_raise_the_documented_error(
    name: str, driver: Driver, ratelimit_service: Ratelimit
) -> None:
    endpoint = ENDPOINTS[name]

    @fuzz()
    @hypothesis.given(
        status=st.sampled_from(sorted(EXPECTED_FOR_STATUS)),
        content=st.sampled_from([*GARBAGE, b'{"error": 5, "message": ["x"], "error_details": {}}', b'{"errors": "x"}']),
        headers=st.dictionaries(st.sampled_from(["Retry-After", "x-ratelimit-reset"]), st.sampled_from(HEADER_VALUES)),
    )
    def check(status: int, content: bytes, headers: dict[str, str]) -> None:
        try:
            exc = driver.outcome(endpoint, httpx.Response(status, content=content, headers=headers))
        finally:
            ratelimit_service.lift_penalties()
        expected = EXPECTED_FOR_STATUS[status]
        if name == "create_order" and expected is ExchangeUnavailable:
            expected = OrderOutcomeUnknown  # a 5xx may have been answered after the order was taken
        assert isinstance(exc, expected), f"{status} {headers}: {exc!r}"
        if isinstance(exc, RateLimited):
            delay = exc.retry_after_s
            assert delay is None or (math.isfinite(delay) and delay >= 0), f"{headers}: retry after {delay}"

    check()


def test_a_malformed_product_in_the_listing_is_named_and_the_others_read() -> None:
    """product_listing reads each product on its own (read_products): a bad one is set aside with its field."""
    good = {**PRODUCT, "product_id": "ETH-USD"}
    where = [p for p in places(Product, PRODUCT)]

    @fuzz(60)
    @hypothesis.given(place=st.sampled_from(where), data=st.data())
    def check(place: Place, data: st.DataObject) -> None:
        delete = place.required and data.draw(st.booleans(), label="delete")
        value = None if delete else data.draw(WRONG[place.kind], label="value")
        bad = mutated(PRODUCT, place, value, delete=delete)
        products, unread = read_products([good, bad, None, "x"])
        assert [p.product_id for p in products] == ["ETH-USD"]
        assert unread[0].field == place.field, (unread[0], place.field)
        assert [u.product_id for u in unread[1:]] == ["products[2]", "products[3]"]

    check()


# The real simulator answering garbage: the universe keeps running on its last good list, then recovers.


def set_faults(http: httpx.Client, sim: str, faults: dict[str, float]) -> None:
    tokens = [shared_settings.DEV_API_TOKEN, getattr(shared_settings, "DEV_OPERATOR_TOKEN", None)]
    for token in filter(None, tokens):
        answer = http.post(f"{sim}/sim/faults", json=faults, headers={"Authorization": f"Bearer {token}"})
        if answer.status_code != 403:
            break
    assert answer.status_code == 200, answer.text
    assert http.get(f"{sim}/sim/faults").json()["malformed_json_fraction"] == faults.get("malformed_json_fraction", 0)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.2)


def test_the_universe_keeps_serving_while_the_simulator_answers_garbage(
    redis_url: str, start_stack: StackFactory
) -> None:
    stack = start_stack(
        redis_url,
        names=["ratelimit", "exchange_sim", "universe"],
        # no product-list cache and a build every second: every build asks the exchange
        extra_env={"UNIVERSE__PRODUCTS_CACHE_MINUTES": "0", "UNIVERSE__REFRESH_INTERVAL_S": "1"},
    )
    universe, sim = stack.url("universe"), stack.url("exchange_sim")
    with httpx.Client(timeout=10) as http:

        def current() -> dict[str, Any]:
            answer = http.get(f"{universe}/v1/universe")
            assert answer.status_code == 200, answer.text
            return answer.json()

        wait_for(lambda: bool(current()["core"]) and not current()["stale"], 30, "a first good universe")
        good = current()
        products = [p["product_id"] for p in good["core"] + good["rotational"]]

        set_faults(http, sim, {"malformed_json_fraction": 1.0})
        try:
            garbage = http.get(f"{sim}/api/v3/brokerage/market/products")
            assert garbage.status_code == 200 and garbage.content.startswith(b'{"products": [')
            with pytest.raises(json.JSONDecodeError):
                garbage.json()
            # the builds fail on the unreadable answers; the last good list is served, marked stale
            wait_for(lambda: current()["stale"], 15, "the universe marked stale")
            for _ in range(10):
                assert http.get(f"{universe}/healthz").status_code == 200
                served = current()
                assert served["stale"], served
                assert [p["product_id"] for p in served["core"] + served["rotational"]] == products
                assert "not JSON" in (served["error"] or ""), served["error"]
                time.sleep(0.3)
            assert stack.processes["universe"].poll() is None
        finally:
            set_faults(http, sim, {})
        wait_for(lambda: not current()["stale"], 20, "the universe fresh again after the faults went off")
        assert current()["built_at"] > good["built_at"]
        assert http.get(f"{universe}/readyz").status_code == 200
