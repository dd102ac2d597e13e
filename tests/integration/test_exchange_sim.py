"""The exchange client against the simulator over real HTTP, with quota from the real ratelimit service."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from prometheus_client import CollectorRegistry

from devtools.redis_server import RedisServer, free_port
from devtools.stack import Stack
from services.ratelimit.settings import RatelimitSettings
from shared.exchange import (
    ApiKey,
    AuthError,
    BadExchangeResponse,
    ExchangeClient,
    ExchangeRejected,
    JwtSigner,
    RateLimited,
    RetryPolicy,
)
from shared.exchange.models import LimitGtc, MarketIoc, OrderConfiguration
from shared.quota import QuotaClient
from shared.settings import DEV_API_TOKEN, load_settings
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
KEY_NAME = "organizations/sim-org/apiKeys/test-key"


def pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def public_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def stack(redis_url: str, start_stack: StackFactory, signing_key: ec.EllipticCurvePrivateKey) -> Stack:
    return start_stack(
        redis_url,
        names=["ratelimit", "exchange_sim"],
        extra_env={"EXCHANGE_SIM__JWT_PUBLIC_KEY": public_pem(signing_key)},
    )


async def make_client(stack: Stack, key: ec.EllipticCurvePrivateKey, **kwargs: object) -> ExchangeClient:
    quota = QuotaClient(
        base_url=stack.url("ratelimit"),
        token=DEV_API_TOKEN,
        config=load_settings(RatelimitSettings).ratelimit,
        client_id="test",
        registry=CollectorRegistry(),
    )
    return ExchangeClient(
        base_url=stack.url("exchange_sim"),
        quota=quota,
        registry=CollectorRegistry(),
        api_key=ApiKey(KEY_NAME, pem(key)),
        **kwargs,
    )


@pytest.fixture
async def client(stack: Stack, signing_key: ec.EllipticCurvePrivateKey) -> AsyncIterator[ExchangeClient]:
    exchange = await make_client(stack, signing_key)
    yield exchange
    await exchange.aclose()
    await exchange.quota.aclose()


def set_faults(stack: Stack, **faults: float) -> None:
    response = httpx.post(f"{stack.url('exchange_sim')}/sim/faults", json=faults, headers=AUTH)
    assert response.status_code == 200, response.text


def market_buy(product_id: str, quote: str) -> dict[str, object]:
    return {
        "client_order_id": str(uuid.uuid4()),
        "product_id": product_id,
        "side": "BUY",
        "configuration": OrderConfiguration(market_market_ioc=MarketIoc(quote_size=Decimal(quote))),
    }


async def rest_far_below(client: ExchangeClient, product_id: str, size: Decimal) -> str:
    """A post-only limit buy at half the bid: it rests with a hold. Its order id."""
    book = (await client.best_bid_ask([product_id]))[0]
    far_below = (book.bids[0].price * Decimal("0.5")).quantize(Decimal("0.01"))
    resting = await client.create_order(
        client_order_id=str(uuid.uuid4()),
        product_id=product_id,
        side="BUY",
        configuration=OrderConfiguration(
            limit_limit_gtc=LimitGtc(base_size=size, limit_price=far_below, post_only=True)
        ),
    )
    assert resting.success_response is not None
    return resting.success_response.order_id


async def test_market_data_calls(client: ExchangeClient) -> None:
    page = await client.list_products()
    assert page.num_products >= 250
    ids = {p.product_id for p in page.products}
    assert {"BTC-USD", "ETH-USD", "SOL-USD", "BTC-USDC"} <= ids
    assert {p.quote_currency_id for p in page.products} >= {"USD", "USDC", "EUR", "BTC"}
    assert any(p.trading_disabled for p in page.products)
    second_page = await client.list_products(limit=5, offset=5)
    assert len(second_page.products) == 5
    btc = await client.get_product("BTC-USD")
    assert btc.price is not None and btc.price > 0

    now = int((await client.server_time()).epoch_seconds)
    candles = await client.get_candles("BTC-USD", start=now - 500 * 60, end=now, granularity="ONE_MINUTE")
    assert 499 <= len(candles) <= 501  # two pages of at most 349
    assert [c.start for c in candles] == sorted((c.start for c in candles), reverse=True)
    assert all(c.low <= min(c.open, c.close) and c.high >= max(c.open, c.close) for c in candles)

    books = await client.best_bid_ask(["BTC-USD", "ETH-USD", "SOL-USD"])
    assert [b.product_id for b in books] == ["BTC-USD", "ETH-USD", "SOL-USD"]
    assert all(b.bids[0].price < b.asks[0].price for b in books)
    trades = await client.market_trades("ETH-USD", limit=20)
    assert len(trades.trades) == 20


async def test_orders_fills_and_balances(client: ExchangeClient) -> None:
    before = {a.currency: a.available_balance.value for a in (await client.accounts()).accounts}
    order = market_buy("BTC-USD", "100")
    created = await client.create_order(**order)  # type: ignore[arg-type]
    assert created.success and created.success_response is not None
    order_id = created.success_response.order_id
    placed = await client.get_order(order_id)
    assert placed.status == "FILLED" and placed.client_order_id == order["client_order_id"]
    assert placed.total_fees is not None and placed.total_fees > 0

    again = await client.create_order(**order)  # type: ignore[arg-type]
    assert again.success_response is not None and again.success_response.order_id == order_id
    found = await client.find_order(str(order["client_order_id"]))
    assert found is not None and found.order_id == order_id

    fills = (await client.list_fills(order_ids=[order_id])).fills
    assert len(fills) == 1 and fills[0].liquidity_indicator == "TAKER"
    after = {a.currency: a.available_balance.value for a in (await client.accounts()).accounts}
    spent = before["USD"] - after["USD"]
    assert Decimal("99") < spent <= Decimal("100")
    # a quote-sized order's fill gives its size in USD, as Coinbase does; the client reads it back in BTC
    assert fills[0].size_in_quote and fills[0].size == fills[0].quote_value == placed.filled_value
    assert after["BTC"] - before.get("BTC", Decimal(0)) == fills[0].base_size == placed.filled_size

    rest = await client.get_order(await rest_far_below(client, "ETH-USD", Decimal("0.01")))
    assert rest.status == "OPEN"
    held = {a.currency: a.hold.value for a in (await client.accounts()).accounts if a.hold is not None}
    assert held["USD"] > 0


async def test_exchange_refusals_are_coinbase_errors(client: ExchangeClient) -> None:
    with pytest.raises(ExchangeRejected) as too_big:
        await client.create_order(**market_buy("BTC-USD", "100000000"))  # type: ignore[arg-type]
    assert too_big.value.error == "INSUFFICIENT_FUND"
    with pytest.raises(ExchangeRejected) as precision:
        await client.create_order(
            client_order_id=str(uuid.uuid4()),
            product_id="BTC-USD",
            side="SELL",
            configuration=OrderConfiguration(
                limit_limit_gtc=LimitGtc(base_size=Decimal("0.0000000001"), limit_price=Decimal("90000.00"))
            ),
        )
    assert precision.value.error == "INVALID_SIZE_PRECISION"
    disabled = next(p for p in (await client.list_products()).products if p.trading_disabled)
    with pytest.raises(ExchangeRejected) as refused:
        await client.create_order(**market_buy(disabled.product_id, "10"))  # type: ignore[arg-type]
    assert refused.value.error == "PRODUCT_TRADING_DISABLED"
    with pytest.raises(ExchangeRejected) as unknown:
        await client.get_product("NOPE-USD")
    assert unknown.value.status == 404 and unknown.value.error == "NOT_FOUND"


async def test_jwt_signed_by_another_key_is_refused(stack: Stack) -> None:
    stranger = await make_client(stack, ec.generate_private_key(ec.SECP256R1()))
    try:
        with pytest.raises(AuthError) as refused:
            await stranger.accounts()
        assert KEY_NAME in str(refused.value)
        assert "signature" in str(refused.value)
        assert (await stranger.list_products(limit=1)).products  # public calls need no JWT
    finally:
        await stranger.aclose()
        await stranger.quota.aclose()


def test_private_call_without_jwt_is_a_bare_401_as_coinbase_answers_it(stack: Stack) -> None:
    response = httpx.get(f"{stack.url('exchange_sim')}/api/v3/brokerage/accounts")
    assert response.status_code == 401 and response.headers["content-type"].startswith("text/plain")
    assert response.text.startswith("Unauthorized: missing 'Authorization: Bearer <jwt>'")
    v2 = httpx.get(f"{stack.url('exchange_sim')}/v2/accounts")
    assert v2.status_code == 401 and v2.json()["errors"][0]["id"] == "authentication_error"


def test_private_answers_carry_rate_limit_headers(stack: Stack, signing_key: ec.EllipticCurvePrivateKey) -> None:
    base = stack.url("exchange_sim")
    host = base.removeprefix("http://")
    signer = JwtSigner(ApiKey(KEY_NAME, pem(signing_key)))
    path = "/api/v3/brokerage/accounts"
    first = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {signer.token('GET', host, path)}"})
    second = httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {signer.token('GET', host, path)}"})
    assert first.status_code == second.status_code == 200
    assert first.headers["x-ratelimit-limit"] == "30"
    assert int(second.headers["x-ratelimit-remaining"]) == int(first.headers["x-ratelimit-remaining"]) - 1
    assert int(first.headers["x-ratelimit-reset"]) >= int(time.time())
    replayed = httpx.get(f"{base}{path}", headers={"Authorization": first.request.headers["Authorization"]})
    assert replayed.status_code == 401 and "replayed" in replayed.text


def test_the_eleventh_public_call_in_a_second_gets_429(stack: Stack) -> None:
    url = f"{stack.url('exchange_sim')}/api/v3/brokerage/time"
    with httpx.Client() as raw:
        time.sleep(1.1)
        statuses = [raw.get(url).status_code for _ in range(11)]
        refused = raw.get(url)
    assert statuses[:10] == [200] * 10
    assert statuses[10] == 429
    assert refused.json()["error"] == "rate_limit_exceeded"
    stats = httpx.get(f"{stack.url('exchange_sim')}/sim/stats").json()
    assert stats["endpoints"]["server_time"]["rate_limited"] >= 2


async def test_faults_retried_html_429_penalized_malformed_named(stack: Stack, client: ExchangeClient) -> None:
    client.retry = RetryPolicy(max_attempts=8, base_delay_s=0.01, max_delay_s=0.05, budget_s=5)
    set_faults(stack, error_5xx_fraction=0.5)
    for _ in range(5):
        await client.accounts()  # half the answers are 503: each call still succeeds by retrying
    set_faults(stack, html_429_fraction=1.0)
    with pytest.raises(RateLimited):
        await client.accounts()
    quota = httpx.get(f"{stack.url('ratelimit')}/v1/quota/private").json()
    assert quota["blocked_until_ms"] is not None  # the 429 closed the pool for every client
    set_faults(stack, malformed_json_fraction=1.0)
    with pytest.raises(BadExchangeResponse):
        await client.list_products(limit=1)
    set_faults(stack)
    stats = httpx.get(f"{stack.url('exchange_sim')}/sim/stats").json()
    assert stats["endpoints"]["accounts"]["requests"] >= 6


def test_same_seed_same_market(redis_url: str, start_stack: StackFactory) -> None:
    first = start_stack(redis_url, names=["exchange_sim"])
    second = start_stack(redis_url, names=["exchange_sim"])
    now = int(time.time())
    start = now - now % 3600 - 48 * 3600
    params = {"start": str(start), "end": str(start + 24 * 3600), "granularity": "ONE_HOUR"}
    path = "/api/v3/brokerage/market/products/ETH-USD/candles"
    a = httpx.get(f"{first.url('exchange_sim')}{path}", params=params).json()
    b = httpx.get(f"{second.url('exchange_sim')}{path}", params=params).json()
    assert len(a["candles"]) == 24 and a == b


async def test_order_lists_page_through_an_index_by_time(client: ExchangeClient) -> None:
    placed = []
    for _ in range(7):
        created = await client.create_order(**market_buy("ETH-USD", "5"))  # type: ignore[arg-type]
        assert created.success_response is not None
        placed.append(created.success_response.order_id)
    seen, cursor = [], None
    while True:
        page = await client.list_orders(product_ids=["ETH-USD"], limit=3, cursor=cursor)
        seen += [o.order_id for o in page.orders]
        if not page.has_next:
            break
        cursor = page.cursor
        await client.create_order(**market_buy("ETH-USD", "5"))  # type: ignore[arg-type]  # arrives mid-listing
    assert seen == placed[::-1]  # newest first, each once, none shifted by the orders placed meanwhile
    oldest = (await client.get_order(placed[0])).client_order_id
    found = await client.find_order(oldest, product_id="ETH-USD", page_size=2)
    assert found is not None and found.order_id == placed[0]
    fills = await client.list_fills(product_ids=["ETH-USD"], limit=5)
    assert len(fills.fills) == 5 and fills.cursor


async def test_candles_with_start_after_end_say_so(stack: Stack) -> None:
    path = "/api/v3/brokerage/market/products/BTC-USD/candles"
    answer = httpx.get(
        f"{stack.url('exchange_sim')}{path}", params={"start": "2000", "end": "1000", "granularity": "ONE_MINUTE"}
    )
    assert answer.status_code == 400 and answer.json()["message"] == "start (2000) must not be after end (1000)"


def test_simulator_shows_its_configuration(stack: Stack) -> None:
    config = httpx.get(f"{stack.url('exchange_sim')}/v1/config").json()
    assert config["exchange_sim"]["rate_limits"] == {"public_per_s": 10, "private_per_s": 30}
    assert config["sim_speed"] == 1.0


def test_server_time_candles_and_orders_keep_one_clock(redis_url: str, start_stack: StackFactory) -> None:
    sim = start_stack(redis_url, names=["exchange_sim"], extra_env={"SIM_SPEED": "600"}).url("exchange_sim")
    time.sleep(1.5)  # a quarter of an hour of simulated time
    server = int(httpx.get(f"{sim}/api/v3/brokerage/time").json()["epochSeconds"])
    assert server > time.time() + 600  # the simulated clock runs ahead of the wall clock
    candles = httpx.get(
        f"{sim}/api/v3/brokerage/market/products/BTC-USD/candles",
        params={"start": str(server - 3600), "end": str(server), "granularity": "ONE_MINUTE"},
    ).json()["candles"]
    newest = max(int(c["start"]) for c in candles)
    assert server - 120 <= newest <= server  # the candles reach the server's now, not the wall clock's


def signer_for(sim: str, key: ec.EllipticCurvePrivateKey) -> Callable[..., httpx.Response]:
    """Signed calls to the simulator's Coinbase paths, without the client or quota."""
    signer = JwtSigner(ApiKey(KEY_NAME, pem(key)))
    host = sim.removeprefix("http://")

    def signed(method: str, path: str, body: dict[str, object] | None = None) -> httpx.Response:
        full = f"/api/v3/brokerage{path}"
        token = signer.token(method, host, full)
        return httpx.request(method, f"{sim}{full}", json=body, headers={"Authorization": f"Bearer {token}"})

    return signed


def test_cancelling_an_order_twice_in_one_batch_releases_its_hold_once(
    stack: Stack, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    signed = signer_for(stack.url("exchange_sim"), signing_key)
    resting = {
        "client_order_id": str(uuid.uuid4()),
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "1000.00", "post_only": True}},
    }

    def usd() -> tuple[Decimal, Decimal]:
        account = next(a for a in signed("GET", "/accounts").json()["accounts"] if a["currency"] == "USD")
        return Decimal(account["available_balance"]["value"]), Decimal(account["hold"]["value"])

    before = usd()
    order_id = signed("POST", "/orders", resting).json()["order_id"]
    assert usd()[1] == before[1] + Decimal("1.004")  # 1 USD and the maker fee held
    results = signed("POST", "/orders/batch_cancel", {"order_ids": [order_id, order_id]}).json()["results"]
    assert [r["success"] for r in results] == [True, False]
    assert results[1]["failure_reason"] == "DUPLICATE_CANCEL_REQUEST"
    assert usd() == before


def test_an_order_whose_save_failed_never_happened_and_its_retry_places_it_once(
    private_redis: RedisServer, start_stack: StackFactory, signing_key: ec.EllipticCurvePrivateKey, key_prefix: str
) -> None:
    sim = start_stack(
        private_redis.url, names=["exchange_sim"], extra_env={"EXCHANGE_SIM__JWT_PUBLIC_KEY": public_pem(signing_key)}
    ).url("exchange_sim")
    signed = signer_for(sim, signing_key)
    order = {
        "client_order_id": str(uuid.uuid4()),
        "product_id": "BTC-USD",
        "side": "BUY",
        "order_configuration": {"market_market_ioc": {"quote_size": "100"}},
    }
    admin = redis.Redis.from_url(private_redis.url)
    try:
        admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # writes now fail: READONLY
        failed = signed("POST", "/orders", order)
        assert failed.status_code == 503 and failed.json()["error"] == "UNAVAILABLE"
        admin.execute_command("REPLICAOF", "NO", "ONE")
        placed = signed("POST", "/orders", order)
        again = signed("POST", "/orders", order)
        assert placed.json()["success"] and again.json()["order_id"] == placed.json()["order_id"]
        assert admin.zcard(f"{key_prefix}exchange_sim:orders") == 1
        shown = {
            a["currency"]: Decimal(a["available_balance"]["value"])
            for a in signed("GET", "/accounts").json()["accounts"]
        }
        saved = {
            k.decode(): Decimal(v.decode()) for k, v in admin.hgetall(f"{key_prefix}exchange_sim:balances").items()
        }
        assert shown == saved
        assert Decimal(9900) <= shown["USD"] < Decimal(10_000)  # one order's worth spent, not two
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")
        admin.close()


def test_fault_settings_out_of_range_are_422_naming_the_field(stack: Stack) -> None:
    answer = httpx.post(f"{stack.url('exchange_sim')}/sim/faults", json={"latency_ms": 2**70}, headers=AUTH)
    assert answer.status_code == 422
    assert answer.json()["details"]["fields"][0] == {
        "field": "latency_ms",
        "message": "Input should be less than or equal to 60000",
        "value": str(2**70),
    }


async def test_the_client_cancels_a_resting_order(client: ExchangeClient) -> None:
    order_id = await rest_far_below(client, "BTC-USD", Decimal("0.001"))
    assert [(r.order_id, r.success) for r in await client.cancel_orders([order_id])] == [(order_id, True)]
    assert (await client.get_order(order_id)).status == "CANCELLED"
    again = await client.cancel_orders([order_id])
    assert not again[0].success and again[0].failure_reason == "DUPLICATE_CANCEL_REQUEST"
