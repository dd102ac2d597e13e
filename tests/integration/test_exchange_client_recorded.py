"""The exchange client against recorded Coinbase answers (respx: the live exchange is the one part we cannot
reach), taking its quota from the real ratelimit service."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jwt
import pytest
import redis
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from shared.errors import InvalidRequest
from shared.exchange import (
    ApiKey,
    AuthError,
    BadExchangeResponse,
    ExchangeClient,
    ExchangeRejected,
    ExchangeUnavailable,
    JwtSigner,
    OrderOutcomeUnknown,
    RateLimited,
    RetryPolicy,
)
from shared.exchange.models import Fill, LimitGtc, MarketIoc, OrderConfiguration
from shared.exchange.responses import read_products
from shared.quota import QuotaClient
from shared.ratelimits import RateLimitConfig
from tests.conftest import generous_ratelimit

pytestmark = pytest.mark.integration

BASE = "http://127.0.0.1:8010"
HOST = "127.0.0.1:8010"
API = f"{BASE}/api/v3/brokerage"
NOW = 1_700_000_000
KEY_NAME = "organizations/org-1/apiKeys/key-1"
TOKEN = "test-token"

# Recorded answers in Coinbase's documented shapes: numbers are strings, candles newest first.
PRODUCT = {
    "product_id": "BTC-USD",
    "price": "70123.45",
    "price_percentage_change_24h": "",
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
    "new_field_from_the_future": {"x": 1},
}
PRODUCTS = {
    "products": [PRODUCT, {**PRODUCT, "product_id": "ETH-USD", "price": "3500.1"}],
    "num_products": 2,
    "pagination": {"prev_union": "", "next_union": "", "has_next": False, "next_cursor": ""},
}
ORDER = {
    "order_id": "0000-000000-000001",
    "product_id": "BTC-USD",
    "user_id": "2222-000000-000000",
    "order_configuration": {"limit_limit_gtc": {"base_size": "0.01", "limit_price": "45000.00", "post_only": False}},
    "side": "BUY",
    "client_order_id": "coid-1",
    "status": "OPEN",
    "time_in_force": "GOOD_UNTIL_CANCELLED",
    "created_time": "2024-01-15T10:00:00Z",
    "completion_percentage": "0",
    "filled_size": "0",
    "average_filled_price": "0",
    "fee": "",
    "number_of_fills": "0",
    "filled_value": "0",
    "pending_cancel": False,
    "size_in_quote": False,
    "total_fees": "0",
    "size_inclusive_of_fees": False,
    "total_value_after_fees": "0",
    "trigger_status": "INVALID_ORDER_TYPE",
    "order_type": "LIMIT",
    "reject_reason": "",
    "settled": False,
    "product_type": "SPOT",
    "outstanding_hold_amount": "450.00",
    "is_liquidation": False,
    "last_fill_time": None,
    "edit_history": [],
    "leverage": "",
}
FILL = {
    "entry_id": "e-1",
    "trade_id": "t-1",
    "order_id": "0000-000000-000001",
    "trade_time": "2024-01-15T10:00:01.123456Z",
    "trade_type": "FILL",
    "price": "45000.00",
    "size": "0.01",
    "commission": "2.7",
    "product_id": "BTC-USD",
    "sequence_timestamp": "2024-01-15T10:00:01.123789Z",
    "liquidity_indicator": "MAKER",
    "size_in_quote": False,
    "user_id": "2222-000000-000000",
    "side": "BUY",
}
ACCOUNT = {
    "uuid": "8bfc20d7-f7c6-4422-bf07-8243ca4169fe",
    "name": "BTC Wallet",
    "currency": "BTC",
    "available_balance": {"value": "1.25", "currency": "BTC"},
    "default": False,
    "active": True,
    "created_at": "2021-05-31T09:59:59Z",
    "updated_at": "2021-05-31T09:59:59Z",
    "deleted_at": None,
    "type": "ACCOUNT_TYPE_CRYPTO",
    "ready": True,
    "hold": {"value": "0.05", "currency": "BTC"},
}


def candle(start: int) -> dict[str, str]:
    return {"start": str(start), "low": "1.5", "high": "2.5", "open": "2", "close": "2.25", "volume": "10.125"}


def candles_between(start: int, end: int, step: int = 60) -> dict[str, Any]:
    """What Coinbase answers for [start, end]: both ends inclusive, newest first."""
    return {"candles": [candle(t) for t in range(end - end % step, start - 1, -step)]}


@dataclass
class FakeTime:
    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Ratelimit:
    """The real ratelimit service (one process for the module), read back through its API and metrics.

    The process outlives each test, so every figure is a difference from the test's start.
    """

    def __init__(self, url: str, config: RateLimitConfig, redis_client: redis.Redis, prefix: str):
        self.url = url
        self.config = config
        self.redis = redis_client
        self.prefix = prefix
        self._granted: Counter[tuple[str, str]] = Counter()
        self._penalties: Counter[str] = Counter()

    async def _get(self, path: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}{path}") as response:
            assert response.status == 200, f"GET {path}: {response.status}"
            return await response.read()

    async def _counts(self, name: str, *labels: str, **match: str) -> Counter[Any]:
        text = (await self._get("/metrics")).decode()
        counts: Counter[Any] = Counter()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items()):
                    key = tuple(sample.labels[label] for label in labels)
                    counts[key if len(key) > 1 else key[0]] += int(sample.value)
        return counts

    async def _granted_now(self) -> Counter[tuple[str, str]]:
        return await self._counts("trader_rate_limiter_requests_total", "endpoint", "priority", decision="granted")

    async def _penalties_now(self) -> Counter[str]:
        return await self._counts("trader_rate_limiter_penalties_total", "pool")

    async def begin(self) -> None:
        self._granted = await self._granted_now()
        self._penalties = await self._penalties_now()

    async def granted(self) -> Counter[tuple[str, str]]:
        """Quota the service granted since the test began, per (endpoint, priority it applied)."""
        return await self._granted_now() - self._granted

    async def penalties(self) -> Counter[str]:
        """Exchange 429s reported to the service since the test began, per pool."""
        return await self._penalties_now() - self._penalties

    async def blocked_until_ms(self, pool: str) -> int | None:
        return json.loads(await self._get(f"/v1/quota/{pool}"))["blocked_until_ms"]

    def redis_now_ms(self) -> int:
        """Redis's clock, which the service's penalties are measured on."""
        seconds, micros = self.redis.time()
        return seconds * 1000 + micros // 1000

    def lift_penalty(self, pool: str) -> None:
        """End a long penalty a test set on purpose."""
        self.redis.hdel(f"{self.prefix}ratelimit:pool:{pool}", "blocked_until")

    async def wait_until_open(self, deadline_s: float = 30.0) -> None:
        """Let the penalties a test provoked run out, so the next test starts with open pools."""
        deadline = time.monotonic() + deadline_s
        for pool in self.config.pools:
            while await self.blocked_until_ms(pool) is not None:
                assert time.monotonic() < deadline, f"pool {pool!r} still closed after {deadline_s}s"
                await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def ratelimit_service(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ratelimit]:
    """One ratelimit process for the module, with its own key prefix and pools too generous to ever wait."""
    with generous_ratelimit(redis_url, tmp_path_factory.mktemp("config"), TOKEN, 1000) as (stack, limits):
        client = redis.Redis.from_url(redis_url)
        try:
            config = RateLimitConfig.model_validate(limits["ratelimit"])
            yield Ratelimit(stack.url("ratelimit"), config, client, stack.extra_env["KEY_PREFIX"])
        finally:
            client.close()


@pytest.fixture
async def ratelimit(ratelimit_service: Ratelimit) -> AsyncIterator[Ratelimit]:
    await ratelimit_service.begin()
    yield ratelimit_service
    await ratelimit_service.wait_until_open()


@pytest.fixture
async def quota(ratelimit: Ratelimit) -> AsyncIterator[QuotaClient]:
    client = QuotaClient(
        base_url=ratelimit.url, token=TOKEN, config=ratelimit.config, client_id="test", registry=CollectorRegistry()
    )
    try:
        yield client
    finally:
        await client.aclose()
    assert not client.in_fallback, "quota came from the local fallback limiter, not the ratelimit service"


@pytest.fixture
def ec_private() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def api_key(ec_private: ec.EllipticCurvePrivateKey) -> ApiKey:
    pem = ec_private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return ApiKey(name=KEY_NAME, secret=pem.decode())


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def client(
    quota: QuotaClient, api_key: ApiKey, fake_time: FakeTime, registry: CollectorRegistry
) -> AsyncIterator[ExchangeClient]:
    exchange = ExchangeClient(
        base_url=BASE,
        quota=quota,
        registry=registry,
        api_key=api_key,
        clock=lambda: NOW,
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
        rng=random.Random(7),
    )
    try:
        yield exchange
    finally:
        await exchange.aclose()


@pytest.fixture
def exchange() -> respx.MockRouter:
    with respx.mock(assert_all_called=False) as router:
        yield router


def query(request: httpx.Request) -> list[tuple[str, str]]:
    return list(request.url.params.multi_items())


def claims_of(request: httpx.Request, public_key: Any, algorithm: str = "ES256") -> dict[str, Any]:
    token = request.headers["Authorization"].removeprefix("Bearer ")
    return jwt.decode(token, public_key, algorithms=[algorithm], options={"verify_exp": False, "verify_nbf": False})


# Requests


async def test_list_products_is_public_with_repeated_ids_and_background_quota(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    route = exchange.get(f"{API}/market/products").respond(json=PRODUCTS)
    page = await client.list_products(limit=5, product_type="SPOT", product_ids=["BTC-USD", "ETH-USD"])
    request = route.calls.last.request
    assert query(request) == [
        ("limit", "5"),
        ("product_type", "SPOT"),
        ("product_ids", "BTC-USD"),
        ("product_ids", "ETH-USD"),
    ]
    assert "Authorization" not in request.headers
    assert [p.product_id for p in page.products] == ["BTC-USD", "ETH-USD"]
    assert page.products[0].price == Decimal("70123.45")
    assert page.products[0].price_percentage_change_24h is None
    assert page.num_products == 2
    assert await ratelimit.granted() == {("list_products", "background"): 1}


async def test_each_call_draws_on_the_pool_coinbase_counts_it_in(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    """Public /market paths are counted per IP (`public`), signed paths per key (`private`)."""
    exchange.get(url__regex=rf"{API}/.*").respond(json={})
    calls = {
        "list_products": (client.list_products(), False),
        "get_product": (client.get_product("BTC-USD"), False),
        "server_time": (client.server_time(), False),
        "get_candles": (client.get_candles("BTC-USD", start=0, end=60, granularity="ONE_MINUTE"), True),
        "best_bid_ask": (client.best_bid_ask(["BTC-USD"]), True),
        "market_trades": (client.market_trades("BTC-USD"), True),
        "accounts": (client.accounts(), True),
        "list_orders": (client.list_orders(), True),
        "list_fills": (client.list_fills(), True),
    }
    for name, (call, signed) in calls.items():
        with contextlib.suppress(BadExchangeResponse):
            await call
        request = exchange.calls.last.request
        pools = set(ratelimit.config.endpoints[name].pools)
        assert ("Authorization" in request.headers) == signed, name
        assert ("/market/" in request.url.path or request.url.path.endswith("/time")) == (not signed), name
        assert ("private" in pools) == signed and ("public" in pools) == (not signed), (name, pools)


async def test_get_product_and_server_time_are_public(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    product = exchange.get(f"{API}/market/products/BTC-USD").respond(json=PRODUCT)
    clock = exchange.get(f"{API}/time").respond(
        json={"iso": "2023-11-14T22:13:20Z", "epochSeconds": "1700000000", "epochMillis": "1700000000000"}
    )
    assert (await client.get_product("BTC-USD")).quote_increment == Decimal("0.01")
    server_time = await client.server_time()
    assert server_time.epoch_seconds == NOW
    assert "Authorization" not in product.calls.last.request.headers
    assert "Authorization" not in clock.calls.last.request.headers
    # no priority sent: the service applied each endpoint's priority from ratelimits.yaml
    assert await ratelimit.granted() == {("get_product", "background"): 1, ("server_time", "normal"): 1}


async def test_candles_request_is_signed_with_string_seconds(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit, ec_private: ec.EllipticCurvePrivateKey
) -> None:
    route = exchange.get(f"{API}/products/BTC-USD/candles").respond(json=candles_between(NOW - 600, NOW))
    candles = await client.get_candles("BTC-USD", start=NOW - 600, end=NOW, granularity="ONE_MINUTE")
    request = route.calls.last.request
    assert query(request) == [("start", str(NOW - 600)), ("end", str(NOW)), ("granularity", "ONE_MINUTE")]
    assert claims_of(request, ec_private.public_key())["uri"] == f"GET {HOST}/api/v3/brokerage/products/BTC-USD/candles"
    assert candles[0].start == NOW - NOW % 60
    assert candles[0].close == Decimal("2.25")
    assert await ratelimit.granted() == {("get_candles", "normal"): 1}


async def test_candles_over_349_are_paged_merged_and_deduplicated(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    end = NOW - NOW % 60
    start = end - 800 * 60

    def answer(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        return httpx.Response(200, json=candles_between(int(params["start"]), int(params["end"])))

    route = exchange.get(f"{API}/products/BTC-USD/candles").mock(side_effect=answer)
    candles = await client.get_candles("BTC-USD", start=start, end=end, granularity="ONE_MINUTE")
    windows = [(int(c.request.url.params["start"]), int(c.request.url.params["end"])) for c in route.calls]
    assert windows == [(end - 349 * 60, end), (end - 698 * 60, end - 349 * 60), (start, end - 698 * 60)]
    starts = [c.start for c in candles]
    assert starts == sorted(set(starts), reverse=True)
    assert starts[0] == end and starts[-1] == start
    assert len(candles) == 801


async def test_best_bid_ask_sends_repeated_product_ids(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    book = {"product_id": "BTC-USD", "bids": [{"price": "70000.01", "size": "0.5"}], "asks": [], "time": ""}
    route = exchange.get(f"{API}/best_bid_ask").respond(json={"pricebooks": [book]})
    books = await client.best_bid_ask(["BTC-USD", "ETH-USD"])
    assert query(route.calls.last.request) == [("product_ids", "BTC-USD"), ("product_ids", "ETH-USD")]
    assert books[0].bids[0].price == Decimal("70000.01")


async def test_market_trades_sends_limit(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    trade = {
        "trade_id": "1",
        "product_id": "BTC-USD",
        "price": "70000",
        "size": "0.1",
        "time": "2024-01-15T10:00:00Z",
        "side": "SELL",
        "exchange": "coinbase",
    }
    route = exchange.get(f"{API}/products/BTC-USD/ticker").respond(
        json={"trades": [trade], "best_bid": "69999.99", "best_ask": "70000.01"}
    )
    trades = await client.market_trades("BTC-USD", limit=10)
    assert query(route.calls.last.request) == [("limit", "10")]
    assert trades.best_ask == Decimal("70000.01")


async def test_create_order_sends_numbers_as_strings_with_critical_quota(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    route = exchange.post(f"{API}/orders").respond(
        json={
            "success": True,
            "success_response": {"order_id": "o-1", "product_id": "BTC-USD", "side": "SELL", "client_order_id": "c-1"},
            "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "70000.00"}},
        }
    )
    config = OrderConfiguration(
        limit_limit_gtc=LimitGtc(base_size=Decimal("0.001"), limit_price=Decimal("7E+4"), post_only=False)
    )
    response = await client.create_order(client_order_id="c-1", product_id="BTC-USD", side="SELL", configuration=config)
    request = route.calls.last.request
    assert json.loads(request.content) == {
        "client_order_id": "c-1",
        "product_id": "BTC-USD",
        "side": "SELL",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "70000", "post_only": False}},
    }
    assert request.headers["Authorization"].startswith("Bearer ")
    assert response.success_response is not None and response.success_response.order_id == "o-1"
    assert await ratelimit.granted() == {("create_order", "critical"): 1}


@pytest.mark.parametrize(
    ("configuration", "problem"),
    [
        (OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal(1), base_size=Decimal(1))), "exactly one"),
        (OrderConfiguration(), "exactly one of market_market_ioc or limit_limit_gtc"),
    ],
)
async def test_invalid_order_is_refused_before_any_call(
    client: ExchangeClient, exchange: respx.MockRouter, configuration: OrderConfiguration, problem: str
) -> None:
    route = exchange.post(f"{API}/orders")
    with pytest.raises(InvalidRequest, match=problem):
        await client.create_order(client_order_id="c-0", product_id="BTC-USD", side="BUY", configuration=configuration)
    assert not route.called


async def test_orders_from_elsewhere_may_carry_other_configurations(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    stop = {"stop_limit_stop_limit_gtc": {"base_size": "1", "limit_price": "2", "stop_price": "3"}}
    exchange.get(f"{API}/orders/historical/o-2").respond(json={"order": {**ORDER, "order_configuration": stop}})
    order = await client.get_order("o-2")
    assert order.order_configuration == OrderConfiguration()


async def test_create_order_refused_raises_with_the_reason(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    exchange.post(f"{API}/orders").respond(
        json={
            "success": False,
            "error_response": {
                "error": "INSUFFICIENT_FUND",
                "message": "Insufficient balance in source account",
                "error_details": "",
                "preview_failure_reason": "PREVIEW_INSUFFICIENT_FUND",
                "new_order_failure_reason": "UNKNOWN_FAILURE_REASON",
            },
        }
    )
    config = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))
    with pytest.raises(ExchangeRejected, match="INSUFFICIENT_FUND") as raised:
        await client.create_order(client_order_id="c-2", product_id="BTC-USD", side="BUY", configuration=config)
    assert raised.value.error == "INSUFFICIENT_FUND"
    assert raised.value.preview_failure_reason == "PREVIEW_INSUFFICIENT_FUND"
    assert not raised.value.retryable


async def test_orders_fills_and_accounts_requests(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    one = exchange.get(f"{API}/orders/historical/0000-000000-000001").respond(json={"order": ORDER})
    batch = exchange.get(f"{API}/orders/historical/batch").respond(
        json={"orders": [ORDER, {**ORDER, "client_order_id": "x"}], "sequence": "0", "has_next": True, "cursor": "c2"}
    )
    fills = exchange.get(f"{API}/orders/historical/fills").respond(json={"fills": [FILL], "cursor": ""})
    accounts = exchange.get(f"{API}/accounts").respond(
        json={"accounts": [ACCOUNT], "has_next": False, "cursor": "", "size": 1}
    )

    order = await client.get_order("0000-000000-000001")
    page = await client.list_orders(product_ids=["BTC-USD"], order_status=["OPEN", "FILLED"], cursor="c1")
    fill_page = await client.list_fills(order_ids=["o-1", "o-2"], cursor="f1")
    account_page = await client.accounts()

    assert order.outstanding_hold_amount == Decimal("450.00") and order.fee is None
    assert order.order_configuration is not None and order.order_configuration.limit_limit_gtc is not None
    assert query(batch.calls.last.request) == [
        ("product_ids", "BTC-USD"),
        ("order_status", "OPEN"),
        ("order_status", "FILLED"),
        ("cursor", "c1"),
    ]
    assert [o.client_order_id for o in page.orders] == ["coid-1", "x"] and page.cursor == "c2"
    assert query(fills.calls.last.request) == [("order_ids", "o-1"), ("order_ids", "o-2"), ("cursor", "f1")]
    assert fill_page.fills[0].commission == Decimal("2.7")
    assert query(accounts.calls.last.request) == [("limit", "250")]
    assert account_page.accounts[0].hold is not None and account_page.accounts[0].hold.value == Decimal("0.05")
    for route in (one, batch, fills, accounts):
        assert route.calls.last.request.headers["Authorization"].startswith("Bearer ")
    assert await ratelimit.granted() == {
        ("get_order", "critical"): 1,
        ("list_orders", "normal"): 1,
        ("list_fills", "normal"): 1,
        ("accounts", "critical"): 1,
    }


# JWT and keys


def test_es256_jwt_claims(api_key: ApiKey, ec_private: ec.EllipticCurvePrivateKey) -> None:
    token = JwtSigner(api_key, clock=lambda: NOW).token("GET", "api.coinbase.com", "/api/v3/brokerage/accounts?limit=1")
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(token, ec_private.public_key(), algorithms=["ES256"], options={"verify_exp": False})
    assert header["alg"] == "ES256" and header["kid"] == KEY_NAME and header["typ"] == "JWT"
    assert len(header["nonce"]) == 64 and int(header["nonce"], 16) >= 0
    assert claims == {
        "sub": KEY_NAME,
        "iss": "cdp",
        "nbf": NOW,
        "exp": NOW + 120,
        "uri": "GET api.coinbase.com/api/v3/brokerage/accounts",
    }


def test_each_token_has_a_fresh_nonce(api_key: ApiKey) -> None:
    signer = JwtSigner(api_key, clock=lambda: NOW)
    first, second = (jwt.get_unverified_header(signer.token("GET", HOST, "/x"))["nonce"] for _ in range(2))
    assert first != second


@pytest.mark.parametrize("form", ["pkcs8-pem", "raw-32", "raw-64"])
def test_ed25519_keys_sign_eddsa(form: str) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    secret = {
        "pkcs8-pem": private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
        "raw-32": base64.b64encode(seed).decode(),
        "raw-64": base64.b64encode(seed + private.public_key().public_bytes_raw()).decode(),
    }[form]
    token = JwtSigner(ApiKey("key-uuid", secret), clock=lambda: NOW).token("POST", HOST, "/api/v3/brokerage/orders")
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    claims = jwt.decode(token, private.public_key(), algorithms=["EdDSA"], options={"verify_exp": False})
    assert claims["uri"] == f"POST {HOST}/api/v3/brokerage/orders"
    assert claims["exp"] - claims["nbf"] == 120


def test_bad_secret_names_the_key_and_hides_the_secret() -> None:
    secret = "bm90LWEta2V5"
    with pytest.raises(AuthError, match="my-key") as raised:
        JwtSigner(ApiKey("my-key", secret))
    assert secret not in str(raised.value) and secret not in repr(raised.value.details)
    assert secret not in repr(ApiKey("my-key", secret)) and secret not in str(ApiKey("my-key", secret))


def test_key_loads_from_env_and_from_a_cdp_key_file(tmp_path: Path, api_key: ApiKey) -> None:
    escaped = api_key.secret.replace("\n", "\\n")
    from_env = ApiKey.from_env({"COINBASE_API_KEY_NAME": KEY_NAME, "COINBASE_API_KEY_SECRET": escaped})
    assert from_env == api_key
    path = tmp_path / "cdp_api_key.json"
    path.write_text(json.dumps({"id": "key-uuid", "privateKey": api_key.secret}))
    assert ApiKey.from_env({"COINBASE_API_KEY_FILE": str(path)}) == ApiKey("key-uuid", api_key.secret)
    with pytest.raises(AuthError, match="COINBASE_API_KEY_SECRET"):
        ApiKey.from_env({"COINBASE_API_KEY_NAME": KEY_NAME})


# Errors
# Each recorded 429 advises a one-second wait: the penalty really closes the shared service's pool, and the
# `ratelimit` fixture waits it out before the next test.


async def test_json_429_raises_rate_limited_and_reports_a_penalty(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit, registry: CollectorRegistry
) -> None:
    exchange.get(f"{API}/best_bid_ask").respond(
        429, json={"error": "rate_limit_exceeded", "message": "Too many requests"}, headers={"Retry-After": "1"}
    )
    before_ms = ratelimit.redis_now_ms()
    with pytest.raises(RateLimited) as raised:
        await client.best_bid_ask(["BTC-USD"])
    after_ms = ratelimit.redis_now_ms()
    assert raised.value.retry_after_s == 1.0 and raised.value.retryable
    # reported: best_bid_ask's pool is closed for every client for the advised 1000 ms
    assert await ratelimit.penalties() == {"private": 1}
    assert before_ms + 1000 <= (await ratelimit.blocked_until_ms("private") or 0) <= after_ms + 1000
    assert registry.get_sample_value("trader_exchange_rate_limited_total", {"endpoint": "best_bid_ask"}) == 1
    assert registry.get_sample_value("trader_exchange_requests_total", {"endpoint": "best_bid_ask", "status": "429"})


async def test_html_429_with_epoch_reset_raises_rate_limited(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    exchange.post(f"{API}/orders").respond(
        429,
        text="<html><body><h1>429 Too Many Requests</h1></body></html>",
        headers={"Content-Type": "text/html", "x-ratelimit-reset": str(NOW + 1)},
    )
    config = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))
    before_ms = ratelimit.redis_now_ms()
    with pytest.raises(RateLimited) as raised:
        await client.create_order(client_order_id="c-3", product_id="BTC-USD", side="BUY", configuration=config)
    after_ms = ratelimit.redis_now_ms()
    assert raised.value.retry_after_s == 1.0
    # reported: create_order's pool is closed for every client for the advised 1000 ms
    assert await ratelimit.penalties() == {"private": 1}
    assert before_ms + 1000 <= (await ratelimit.blocked_until_ms("private") or 0) <= after_ms + 1000


async def test_500_then_200_is_retried_after_a_jittered_pause(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit, fake_time: FakeTime
) -> None:
    exchange.get(f"{API}/accounts").mock(
        side_effect=[httpx.Response(500, text="oops"), httpx.Response(200, json={"accounts": [ACCOUNT]})]
    )
    page = await client.accounts()
    assert page.accounts[0].currency == "BTC"
    assert len(fake_time.sleeps) == 1 and 0 <= fake_time.sleeps[0] <= 0.25
    assert await ratelimit.granted() == {("accounts", "critical"): 2}  # quota again for the retry


async def test_persistent_503_gives_up_after_the_bound(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit, fake_time: FakeTime
) -> None:
    route = exchange.get(f"{API}/products/BTC-USD/ticker").respond(503)
    with pytest.raises(ExchangeUnavailable, match="after 4 attempt"):
        await client.market_trades("BTC-USD")
    assert route.call_count == 4 and await ratelimit.granted() == {("market_trades", "normal"): 4}
    assert len(fake_time.sleeps) == 3
    assert all(0 <= pause <= 0.25 * 2**i for i, pause in enumerate(fake_time.sleeps))


async def test_retries_stop_at_the_time_budget(
    quota: QuotaClient, api_key: ApiKey, exchange: respx.MockRouter, fake_time: FakeTime
) -> None:
    route = exchange.get(f"{API}/accounts").mock(side_effect=httpx.ConnectError("refused"))
    client = ExchangeClient(
        base_url=BASE,
        quota=quota,
        registry=CollectorRegistry(),
        api_key=api_key,
        retry=RetryPolicy(max_attempts=100, base_delay_s=10, max_delay_s=10, budget_s=25),
        monotonic=fake_time.monotonic,
        sleep=fake_time.sleep,
        rng=random.Random(1),
    )
    try:
        with pytest.raises(ExchangeUnavailable, match="ConnectError"):
            await client.accounts()
    finally:
        await client.aclose()
    assert sum(fake_time.sleeps) <= 25 and route.call_count < 100


async def test_create_order_retry_resends_the_same_client_order_id(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    route = exchange.post(f"{API}/orders").mock(
        side_effect=[
            httpx.ReadTimeout("slow"),
            httpx.Response(502),
            httpx.Response(200, json={"success": True, "success_response": {"order_id": "o-9"}}),
        ]
    )
    config = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))
    await client.create_order(client_order_id="c-9", product_id="BTC-USD", side="BUY", configuration=config)
    bodies = [json.loads(call.request.content) for call in route.calls]
    assert len(bodies) == 3 and all(body == bodies[0] for body in bodies)
    assert bodies[0]["client_order_id"] == "c-9"


async def test_401_raises_auth_error_naming_the_key(
    client: ExchangeClient, exchange: respx.MockRouter, api_key: ApiKey
) -> None:
    exchange.get(f"{API}/accounts").respond(401, json={"error": "UNAUTHENTICATED", "message": "Unauthorized"})
    with pytest.raises(AuthError, match=KEY_NAME) as raised:
        await client.accounts()
    assert api_key.secret not in str(raised.value) and "BEGIN" not in repr(raised.value.details)
    assert not raised.value.retryable


async def test_400_raises_exchange_rejected_with_the_message(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    exchange.get(f"{API}/products/BTC-USD/candles").respond(
        400,
        json={
            "error": "INVALID_ARGUMENT",
            "error_details": "start and end argument is invalid - number of candles requested should be less than 350",
            "message": "start and end argument is invalid - number of candles requested should be less than 350",
        },
    )
    with pytest.raises(ExchangeRejected, match="INVALID_ARGUMENT: start and end argument is invalid") as raised:
        await client.get_candles("BTC-USD", start=NOW - 60, end=NOW, granularity="ONE_MINUTE")
    assert raised.value.status == 400 and raised.value.error == "INVALID_ARGUMENT"


async def test_malformed_json_raises_bad_exchange_response(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    exchange.get(f"{API}/market/products").respond(200, text='{"products": [')
    with pytest.raises(BadExchangeResponse, match="not JSON"):
        await client.list_products()


async def test_wrong_typed_field_is_named(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    bad = {**PRODUCTS, "products": [PRODUCT, {**PRODUCT, "price": "abc"}]}
    exchange.get(f"{API}/market/products").respond(json=bad)
    with pytest.raises(BadExchangeResponse, match=r"products\[1\]\.price: 'abc' is not a decimal") as raised:
        await client.list_products()
    assert raised.value.field == "products[1].price"


async def test_missing_required_field_is_named(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    exchange.get(f"{API}/products/BTC-USD/candles").respond(json={"candles": [{"start": "1700000000", "low": "1"}]})
    with pytest.raises(BadExchangeResponse, match=r"candles\[0\]\.high: is missing"):
        await client.get_candles("BTC-USD", start=NOW - 60, end=NOW, granularity="ONE_MINUTE")


async def test_an_order_that_may_be_live_is_never_reported_as_never_sent(
    client: ExchangeClient, exchange: respx.MockRouter, ratelimit: Ratelimit
) -> None:
    async def timeout_then_close_the_pool(request: httpx.Request) -> httpx.Response:
        # the first attempt may have reached the exchange; then an exchange 429 elsewhere closes the pool
        async with (  # aiohttp: respx mocks every httpx request
            aiohttp.ClientSession() as http,
            http.post(
                f"{ratelimit.url}/v1/penalty",
                json={"pool": "private", "retry_after_ms": 60_000},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as answer,
        ):
            assert answer.status == 200
        raise httpx.ReadTimeout("no answer", request=request)

    exchange.post(f"{API}/orders").mock(side_effect=timeout_then_close_the_pool)
    config = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))
    with pytest.raises(OrderOutcomeUnknown) as caught:
        await client.create_order(client_order_id="c-live", product_id="BTC-USD", side="BUY", configuration=config)
    assert caught.value.client_order_id == "c-live" and caught.value.retryable
    assert "ReadTimeout" in caught.value.message and "quota_denied" == caught.value.details["cause"]
    ratelimit.lift_penalty("private")


async def test_an_order_never_sent_fails_as_itself(client: ExchangeClient, exchange: respx.MockRouter) -> None:
    exchange.post(f"{API}/orders").mock(side_effect=httpx.ConnectError("refused"))
    config = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))
    with pytest.raises(ExchangeUnavailable):
        await client.create_order(client_order_id="c-none", product_id="BTC-USD", side="BUY", configuration=config)


async def test_an_unreadable_answer_to_an_order_is_an_unknown_outcome(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    exchange.post(f"{API}/orders").respond(200, content=b'{"success": tr')
    config = OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal("10")))
    with pytest.raises(OrderOutcomeUnknown):
        await client.create_order(client_order_id="c-bad", product_id="BTC-USD", side="BUY", configuration=config)


async def test_find_order_pages_back_until_the_client_order_id(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    pages = [
        {"orders": [{**ORDER, "client_order_id": f"other-{i}"}], "has_next": True, "cursor": f"p{i + 1}"}
        for i in range(3)
    ] + [{"orders": [{**ORDER, "client_order_id": "wanted"}], "has_next": True, "cursor": "p4"}]
    route = exchange.get(f"{API}/orders/historical/batch").mock(
        side_effect=[httpx.Response(200, json=page) for page in pages]
    )
    since = datetime(2024, 1, 15, tzinfo=UTC)
    found = await client.find_order("wanted", product_id="BTC-USD", since=since)
    assert found is not None and found.client_order_id == "wanted"
    assert [dict(query(call.request)).get("cursor") for call in route.calls] == [None, "p1", "p2", "p3"]
    assert ("start_date", "2024-01-15T00:00:00Z") in query(route.calls[0].request)
    route.side_effect = [httpx.Response(200, json=page) for page in pages[:3]]
    assert await client.find_order("missing", max_pages=3) is None


def test_a_fill_sized_in_quote_is_read_in_base_units() -> None:
    bought = Fill.model_validate({**FILL, "size": "27.135", "price": "45000.00", "size_in_quote": True})
    assert bought.base_size == Decimal("0.000603") and bought.quote_value == Decimal("27.135")
    plain = Fill.model_validate(FILL)
    assert plain.base_size == Decimal("0.01") and plain.quote_value == Decimal("450.0000")


async def test_the_product_listing_keeps_entries_that_are_not_products(
    client: ExchangeClient, exchange: respx.MockRouter
) -> None:
    exchange.get(f"{API}/market/products").respond(json={"products": [PRODUCT, None, "x"], "num_products": 3})
    products, unreadable = read_products(await client.product_listing())
    assert [p.product_id for p in products] == ["BTC-USD"]
    assert [u.product_id for u in unreadable] == ["products[1]", "products[2]"]
