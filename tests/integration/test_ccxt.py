"""CCXT's `coinbase` class against the running simulator, sync and async, built as a user would build it.

Every test starts its own simulator (its own key prefix, so its own account at the configured starting balances)
with the public key of the key CCXT signs with, so every private call's signature is checked.
`pytest -s` prints the table of CCXT calls and their results of the trading test."""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import ccxt
import ccxt.async_support
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from shared.settings import DEV_API_TOKEN
from tests.conftest import StackFactory

pytestmark = pytest.mark.integration

KEY_NAME = "organizations/test/apiKeys/ccxt"
ED25519_KEY_ID = "0b4f6f6c-6d9e-4c1e-9a43-6a3d2a1c7e55"
SYMBOL = "BTC/USD"


def coinbase_options(sim_url: str, secret: str) -> dict[str, Any]:
    """The CCXT constructor options for the simulator (README quotes them): `ccxt.coinbase(coinbase_options(...))`.

    `secret` is the EC private key's PEM, as CDP gives it; its public key is the simulator's
    `EXCHANGE_SIM__JWT_PUBLIC_KEY`. Without apiKey and secret, only the public calls work."""
    return {
        "apiKey": KEY_NAME,
        "secret": secret,
        "urls": {"api": {"rest": sim_url}},  # e.g. "http://127.0.0.1:8010"
    }


SimFactory = Callable[..., str]


@pytest.fixture
def start_sim(redis_url: str, start_stack: StackFactory) -> SimFactory:
    """Start a simulator checking JWTs against `public_key` (PEM), with more settings from `env`; its URL."""

    def start(public_key: str | None = None, **env: str) -> str:
        extra = dict(env)
        if public_key is not None:
            extra["EXCHANGE_SIM__JWT_PUBLIC_KEY"] = public_key
        return start_stack(redis_url, names=["exchange_sim"], extra_env=extra).url("exchange_sim")

    return start


# --- keys ---------------------------------------------------------------------------------------------------------


def ec_key() -> tuple[str, str]:
    """A new P-256 key: (private PEM for CCXT's secret, public PEM for the simulator)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    return private, _public_pem(key.public_key())


def ed25519_key() -> tuple[str, str]:
    """A new Ed25519 key: (CDP's secret, base64 of the 32-byte seed and 32-byte public key; public PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(seed + public).decode(), _public_pem(key.public_key())


def _public_pem(key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# --- helpers ------------------------------------------------------------------------------------------------------


def D(value: object) -> Decimal:
    """CCXT's float (or string) as the decimal it prints."""
    return Decimal(str(value))


def sim_config(sim: str) -> dict[str, Any]:
    return httpx.get(f"{sim}/v1/config").json()


def starting_balances(sim: str) -> dict[str, Decimal]:
    return {c: Decimal(v) for c, v in sim_config(sim)["exchange_sim"]["starting_balances"].items()}


def set_faults(sim: str, **faults: float) -> None:
    answer = httpx.post(f"{sim}/sim/faults", json=faults, headers={"Authorization": f"Bearer {DEV_API_TOKEN}"})
    assert answer.status_code == 200, answer.text


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fetch_balance_via(exchange: ccxt.Exchange, method: str) -> dict[str, Any]:
    """fetch_balance with CCXT's `fetchBalance` option set to `method` (v2 or v3 accounts)."""
    saved = exchange.options["fetchBalance"]
    exchange.options["fetchBalance"] = method
    try:
        return exchange.fetch_balance()
    finally:
        exchange.options["fetchBalance"] = saved


V2, V3 = "v2PrivateGetAccounts", "v3PrivateGetBrokerageAccounts"


def steps(*markets: dict[str, Any]) -> dict[str, Decimal]:
    """The finest increment each currency is counted in on these markets: base amount, quote price."""
    out: dict[str, Decimal] = {}
    for market in markets:
        for code, step in (
            (market["base"], market["precision"]["amount"]),
            (market["quote"], market["precision"]["price"]),
        ):
            out[code] = min(out.get(code, D(step)), D(step))
    return out


def implied_balances(
    start: dict[str, Decimal], trades: list[dict[str, Any]], markets: dict[str, Any]
) -> dict[str, Decimal]:
    """The balances the fills imply: a buy adds its amount and takes its cost and fee; a sell the other way."""
    out: dict[str, Decimal] = {}
    for trade in trades:
        market = markets[trade["symbol"]]
        base, quote = market["base"], market["quote"]
        assert trade["fee"]["currency"] == quote
        amount, cost, fee = D(trade["amount"]), D(trade["cost"]), D(trade["fee"]["cost"])
        assert cost == amount * D(trade["price"]) or abs(cost - amount * D(trade["price"])) < Decimal("1e-12")
        for code in (base, quote):
            out.setdefault(code, start.get(code, Decimal(0)))
        if trade["side"] == "buy":
            out[base] += amount
            out[quote] -= cost + fee
        else:
            assert trade["side"] == "sell"
            out[base] -= amount
            out[quote] += cost - fee
    return out


def assert_balance_agrees(
    balance: dict[str, Any],
    expected: dict[str, Decimal],
    increments: dict[str, Decimal],
    held: dict[str, Decimal] | None = None,
) -> None:
    """CCXT's free/used/total agree with the expected totals and holds to each currency's increment."""
    for code, total in expected.items():
        step, hold = increments[code], (held or {}).get(code, Decimal(0))
        got = balance[code]
        assert abs(D(got["total"]) - total) < step, f"{code} total {got['total']} != {total} (to {step})"
        assert abs(D(got["used"] or 0) - hold) < step, f"{code} used {got['used']} != {hold} (to {step})"
        assert abs(D(got["free"]) - (total - hold)) < step, f"{code} free {got['free']} != {total - hold} (to {step})"


def buy_hold(amount: Decimal, price: Decimal, fee_rate: float) -> Decimal:
    """What a resting buy holds: its notional and the most fee it can pay."""
    return amount * price * (1 + D(fee_rate))


def stop_direction(order: dict[str, Any]) -> str:
    return order["info"]["order_configuration"]["stop_limit_stop_limit_gtc"]["stop_direction"]


def wait_for(check: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(every_s)


# --- the table of calls -------------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:12] + "...'"


def summary(result: Any) -> str:
    """One line of what a CCXT call answered."""
    if isinstance(result, list):
        if not result:
            return "[]"
        return f"{len(result)} items, last: {summary(result[-1])}"
    if not isinstance(result, dict):
        return repr(result)
    if "bids" in result and "asks" in result:
        bids, asks = result["bids"], result["asks"]
        return f"{len(bids)} bids from {bids[0][0]}, {len(asks)} asks from {asks[0][0]}"
    if "side" in result and "status" in result and result["status"] is None:  # create_order, cancel_order
        return f"order {result['id']} accepted"
    if "side" in result and "status" in result:
        return (
            f"{result['id'][:8]} {result['type']} {result['side']} {result['status']} amount {result['amount']} "
            f"filled {result['filled']} price {result['price']} trigger {result['triggerPrice']} "
            f"avg {result['average']} fee {result['fee']['cost'] if result['fee'] else None}"
        )
    if "takerOrMaker" in result:
        return (
            f"order {result['order'][:8]} {result['side']} {result['amount']} at {result['price']} "
            f"cost {result['cost']} fee {result['fee']['cost']} {result['fee']['currency']} {result['takerOrMaker']}"
        )
    if "bid" in result and "last" in result:
        return f"{result['symbol']} bid {result['bid']} ask {result['ask']} last {result['last']}"
    if "total" in result and "free" in result:
        return "; ".join(
            f"{code} free {result[code]['free']} used {result[code]['used']} total {result[code]['total']}"
            for code in sorted(result["total"])
            if result["total"][code]
        )
    if all(isinstance(v, dict) and "symbol" in v for v in result.values()):
        return f"{len(result)} markets"
    return repr(result)[:100]


class CallTable:
    """Runs CCXT calls on one exchange and keeps a line per call: the table that `pytest -s` shows."""

    def __init__(self, exchange: ccxt.Exchange) -> None:
        self.exchange = exchange
        self.rows: list[tuple[str, str]] = []

    def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        result = getattr(self.exchange, method)(*args, **kwargs)
        shown = ", ".join([*(_short(a) for a in args), *(f"{k}={_short(v)}" for k, v in kwargs.items())])
        self.rows.append((f"{method}({shown})", summary(result)))
        return result

    def note(self, call: str, result: str) -> None:
        self.rows.append((call, result))

    def print(self) -> None:
        width = max(len(call) for call, _ in self.rows)
        print(f"\n{'CCXT call':<{width}}  result")
        for call, result in self.rows:
            print(f"{call:<{width}}  {result}")


# --- public market data -------------------------------------------------------------------------------------------


def test_public_market_data_with_the_default_configuration(start_sim: SimFactory) -> None:
    sim = start_sim()
    products = httpx.get(f"{sim}/api/v3/brokerage/market/products").json()["products"]
    exchange = ccxt.coinbase({"urls": {"api": {"rest": sim}}})  # no keys: public calls only
    try:
        markets = exchange.load_markets()
        assert set(markets) == {f"{p['base_currency_id']}/{p['quote_currency_id']}" for p in products}
        assert {"BTC", "ETH", "USD", "USDC"} <= set(exchange.currencies)
        btc = exchange.market(SYMBOL)
        product = next(p for p in products if p["product_id"] == "BTC-USD")
        assert btc["id"] == "BTC-USD" and btc["spot"] and btc["active"]
        assert D(btc["precision"]["amount"]) == Decimal(product["base_increment"])
        assert D(btc["precision"]["price"]) == Decimal(product["quote_increment"])
        assert D(btc["limits"]["amount"]["min"]) == Decimal(product["base_min_size"])
        assert D(btc["limits"]["cost"]["min"]) == Decimal(product["quote_min_size"])
        disabled = next(p for p in products if p["trading_disabled"])
        assert not exchange.markets_by_id[disabled["product_id"]][0]["active"]

        server_ms = exchange.fetch_time()
        assert abs(server_ms - time.time() * 1000) < 5000

        ticker = exchange.fetch_ticker(SYMBOL)
        assert ticker["symbol"] == SYMBOL and 0 < ticker["bid"] < ticker["ask"] and ticker["last"] > 0
        assert ticker["ask"] / ticker["bid"] < 1.01
        tickers = exchange.fetch_tickers([SYMBOL, "ETH/USD"])
        assert set(tickers) == {SYMBOL, "ETH/USD"} and all(t["last"] > 0 for t in tickers.values())
        assert set(exchange.fetch_tickers()) == set(markets)

        candles = exchange.fetch_ohlcv(SYMBOL, "1m", limit=10)
        assert len(candles) == 10
        starts = [c[0] for c in candles]
        assert starts == [starts[0] + 60_000 * i for i in range(10)]
        assert time.time() * 1000 - starts[-1] < 3 * 60_000
        assert all(low <= min(o, c) <= max(o, c) <= high and v >= 0 for _, o, high, low, c, v in candles)
        day_start = (int(time.time()) // 3600 - 30) * 3600 * 1000
        hours = exchange.fetch_ohlcv(SYMBOL, "1h", since=day_start, limit=24)
        assert [c[0] for c in hours] == [day_start + 3_600_000 * i for i in range(24)]

        book = exchange.fetch_order_book(SYMBOL, limit=10)
        assert book["symbol"] == SYMBOL and 0 < len(book["bids"]) <= 10 and 0 < len(book["asks"]) <= 10
        assert book["bids"] == sorted(book["bids"], reverse=True) and book["asks"] == sorted(book["asks"])
        assert book["bids"][0][0] < book["asks"][0][0]
        assert all(size > 0 for _, size in book["bids"] + book["asks"])
    finally:
        exchange.close()


# --- trading, the constructor options exactly as written ----------------------------------------------------------


def test_orders_fills_and_balances_agree_with_the_readme_options(start_sim: SimFactory) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    start = starting_balances(sim)
    fees = sim_config(sim)["exchange_sim"]["fees"]
    exchange = ccxt.coinbase(coinbase_options(sim, secret))
    call = CallTable(exchange)
    try:
        markets = call("load_markets")
        btc = markets[SYMBOL]
        # with keys, load_markets reads the account's fee tier from transaction_summary
        assert D(btc["taker"]) == Decimal(fees["taker_pct"]) / 100
        assert D(btc["maker"]) == Decimal(fees["maker_pct"]) / 100
        increments = steps(btc)
        opening = {code: start.get(code, Decimal(0)) for code in ("BTC", "USD")}
        assert_balance_agrees(call("fetch_balance"), opening, increments)  # CCXT's default: v2 accounts
        assert_balance_agrees(fetch_balance_via(exchange, V3), opening, increments)
        call.note("fetch_balance() [options.fetchBalance=v3]", "agrees with the starting balances")
        ticker = call("fetch_ticker", SYMBOL)
        book = call("fetch_order_book", SYMBOL, 5, {"usePrivate": True})  # the private /product_book
        assert book["bids"][0][0] < book["asks"][0][0]

        bought = call("create_market_buy_order_with_cost", SYMBOL, 100)
        buy = call("fetch_order", bought["id"], SYMBOL)
        assert buy["status"] == "closed" and buy["side"] == "buy" and buy["type"] == "market" and buy["filled"] > 0
        spent = D(buy["info"]["total_value_after_fees"])
        assert Decimal(100) - D(btc["precision"]["price"]) < spent <= Decimal(100)  # quote_size includes the fee

        sold = call("create_order", SYMBOL, "market", "sell", 0.0005)
        sell = call("fetch_order", sold["id"], SYMBOL)
        assert sell["status"] == "closed" and sell["side"] == "sell" and D(sell["filled"]) == Decimal("0.0005")

        ask = exchange.fetch_ticker(SYMBOL)["ask"]
        crossing = call("create_order", SYMBOL, "limit", "buy", 0.0002, round(ask * 1.01, 2))
        taker = call("fetch_order", crossing["id"], SYMBOL)
        assert taker["status"] == "closed" and taker["type"] == "limit" and D(taker["filled"]) == Decimal("0.0002")
        assert taker["average"] <= round(ask * 1.01, 2)

        bid = exchange.fetch_ticker(SYMBOL)["bid"]
        far_below = round(bid * 0.5, 2)
        resting = call("create_order", SYMBOL, "limit", "buy", 0.001, far_below)
        placed = call("fetch_order", resting["id"], SYMBOL)
        assert placed["status"] == "open" and placed["filled"] == 0 and placed["price"] == far_below
        assert placed["timeInForce"] == "GTC" and D(placed["amount"]) == Decimal("0.001")
        assert [o["id"] for o in call("fetch_open_orders", SYMBOL)] == [resting["id"]]

        trades = call("fetch_my_trades", SYMBOL)
        assert sorted(t["order"] for t in trades) == sorted([bought["id"], sold["id"], crossing["id"]])
        expected = implied_balances(start, trades, markets)
        held = {"USD": buy_hold(Decimal("0.001"), D(far_below), btc["maker"])}
        assert_balance_agrees(fetch_balance_via(exchange, V3), expected, increments, held)
        call.note("fetch_balance() [v3, an order resting]", f"USD used {held['USD']:.8f} as the hold implies")

        cancelled = call("cancel_order", resting["id"], SYMBOL)
        assert cancelled["id"] == resting["id"]
        assert call("fetch_order", resting["id"], SYMBOL)["status"] == "canceled"
        assert call("fetch_open_orders", SYMBOL) == []
        closed = call("fetch_closed_orders", SYMBOL)
        assert sorted(o["id"] for o in closed) == sorted([bought["id"], sold["id"], crossing["id"]])
        assert all(o["status"] == "closed" for o in closed)
        assert [o["id"] for o in call("fetch_canceled_orders", SYMBOL)] == [resting["id"]]

        for order in (buy, sell, taker):
            own = [t for t in trades if t["order"] == order["id"]]
            assert sum(D(t["amount"]) for t in own) == D(order["filled"])
            assert sum(D(t["fee"]["cost"]) for t in own) == D(order["fee"]["cost"])
            assert all(t["takerOrMaker"] == "taker" for t in own)
        assert_balance_agrees(call("fetch_balance"), expected, increments)
        assert_balance_agrees(fetch_balance_via(exchange, V3), expected, increments)
        call.note("fetch_balance() [v2 and v3, after the cancel]", "agree with the starting balances and the fills")
        assert ticker["last"] > 0
    finally:
        exchange.close()
        call.print()


def test_orders_listed_by_product_and_time(start_sim: SimFactory) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    exchange = ccxt.coinbase(coinbase_options(sim, secret))
    try:
        exchange.load_markets()
        first = exchange.create_market_buy_order_with_cost(SYMBOL, 20)
        time.sleep(0.05)
        second = exchange.create_market_buy_order_with_cost("ETH/USD", 20)
        time.sleep(0.05)
        third = exchange.create_order(SYMBOL, "market", "sell", 0.0002)
        time.sleep(0.05)
        eth_bid = exchange.fetch_ticker("ETH/USD")["bid"]
        resting = exchange.create_order("ETH/USD", "limit", "buy", 0.01, round(eth_bid * 0.5, 2))
        t1, t2, t3 = (exchange.fetch_order(o["id"])["timestamp"] for o in (first, second, third))
        assert t1 < t2 < t3

        assert [o["id"] for o in exchange.fetch_open_orders("ETH/USD")] == [resting["id"]]
        assert exchange.fetch_open_orders(SYMBOL) == []
        # the request CCXT makes (product_id, start_date, end_date), answered already filtered
        raw = exchange.v3PrivateGetBrokerageOrdersHistoricalBatch
        by_product = raw({"product_id": "BTC-USD"})["orders"]
        assert [o["order_id"] for o in by_product] == [third["id"], first["id"]]
        after = raw({"product_id": "BTC-USD", "start_date": iso((t1 + t3) // 2)})["orders"]
        assert [o["order_id"] for o in after] == [third["id"]]
        before = raw({"end_date": iso((t1 + t2) // 2)})["orders"]
        assert [o["order_id"] for o in before] == [first["id"]]
        between = exchange.fetch_closed_orders(since=(t1 + t2) // 2, params={"until": (t2 + t3) // 2})
        assert [o["id"] for o in between] == [second["id"]]

        trades = exchange.fetch_my_trades()
        times = {t["order"]: t["timestamp"] for t in trades}
        f1, f2, f3 = times[first["id"]], times[second["id"]], times[third["id"]]
        window = {"start_sequence_timestamp": iso((f1 + f2) // 2), "end_sequence_timestamp": iso((f2 + f3) // 2)}
        fills = exchange.v3PrivateGetBrokerageOrdersHistoricalFills(window)["fills"]
        assert [f["order_id"] for f in fills] == [second["id"]]
        mine = exchange.fetch_my_trades(since=(f1 + f2) // 2, params={"until": (f2 + f3) // 2})
        assert [t["order"] for t in mine] == [second["id"]]
        assert sorted(t["order"] for t in exchange.fetch_my_trades(SYMBOL)) == sorted([first["id"], third["id"]])
    finally:
        exchange.close()


# --- stop-limit, GTD, FOK and IOC ---------------------------------------------------------------------------------


def test_stop_limit_rests_untriggered_until_cancelled_and_one_on_the_wrong_side_is_refused(
    start_sim: SimFactory,
) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    start = starting_balances(sim)
    exchange = ccxt.coinbase(coinbase_options(sim, secret))
    try:
        markets = exchange.load_markets()
        increments = steps(markets[SYMBOL])
        ticker = exchange.fetch_ticker(SYMBOL)
        mid = (ticker["bid"] + ticker["ask"]) / 2
        # a stop-loss sell (STOP_DOWN) above the price: Coinbase's preview refuses it, which CCXT maps to InvalidOrder
        with pytest.raises(ccxt.InvalidOrder, match="PREVIEW_STOP_PRICE_ABOVE_LAST_TRADE_PRICE"):
            exchange.create_order(
                SYMBOL, "limit", "sell", 0.001, round(mid * 1.09, 2), {"stopLossPrice": round(mid * 1.1, 2)}
            )
        # CCXT gives a sell with triggerPrice STOP_UP: below the price that is refused too (CCXT has no mapping for it)
        with pytest.raises(ccxt.ExchangeError, match="PREVIEW_STOP_PRICE_BELOW_LAST_TRADE_PRICE"):
            exchange.create_order(
                SYMBOL, "limit", "sell", 0.001, round(mid * 0.89, 2), {"triggerPrice": round(mid * 0.9, 2)}
            )
        assert exchange.fetch_open_orders(SYMBOL) == [] and exchange.fetch_closed_orders(SYMBOL) == []

        stop, limit = round(mid * 0.9, 2), round(mid * 0.89, 2)
        created = exchange.create_order(SYMBOL, "limit", "sell", 0.001, limit, {"stopLossPrice": stop})
        order = exchange.fetch_order(created["id"], SYMBOL)
        assert order["status"] == "open" and order["type"] == "limit" and order["side"] == "sell"
        assert order["price"] == limit and order["triggerPrice"] == stop and order["filled"] == 0
        assert order["info"]["order_type"] == "STOP_LIMIT" and order["info"]["trigger_status"] == "STOP_PENDING"
        assert stop_direction(order) == "STOP_DIRECTION_STOP_DOWN"
        assert [o["id"] for o in exchange.fetch_open_orders(SYMBOL)] == [created["id"]]
        opening = {code: start.get(code, Decimal(0)) for code in ("BTC", "USD")}
        assert_balance_agrees(fetch_balance_via(exchange, V3), opening, increments, {"BTC": Decimal("0.001")})

        time.sleep(1.0)  # a matching pass or two: still untriggered, 10 % above its stop
        assert exchange.fetch_order(created["id"])["info"]["trigger_status"] == "STOP_PENDING"
        exchange.cancel_order(created["id"], SYMBOL)
        assert exchange.fetch_order(created["id"], SYMBOL)["status"] == "canceled"
        assert exchange.fetch_my_trades(SYMBOL) == []
        assert_balance_agrees(fetch_balance_via(exchange, V3), opening, increments)
        assert_balance_agrees(exchange.fetch_balance(), opening, increments)
    finally:
        exchange.close()


def test_a_stop_limit_triggers_when_the_price_reaches_it_and_becomes_a_limit_order(start_sim: SimFactory) -> None:
    """A bracket around the price on a market 600 times faster (a simulated minute every 0.1 s): whichever way the
    price moves 0.25 %, one stop triggers; its limit, 1 % beyond the stop, then crosses and fills."""
    secret, public = ec_key()
    sim = start_sim(public, SIM_SPEED="600")
    start = starting_balances(sim)
    exchange = ccxt.coinbase(coinbase_options(sim, secret))
    try:
        markets = exchange.load_markets()
        increments = steps(markets[SYMBOL])
        ticker = exchange.fetch_ticker(SYMBOL)
        mid = (ticker["bid"] + ticker["ask"]) / 2
        up, down = round(mid * 1.0025, 2), round(mid * 0.9975, 2)
        stop_buy = exchange.create_order(SYMBOL, "limit", "buy", 0.001, round(up * 1.01, 2), {"stopLossPrice": up})
        stop_sell = exchange.create_order(
            SYMBOL, "limit", "sell", 0.001, round(down * 0.99, 2), {"stopLossPrice": down}
        )
        ids = {stop_buy["id"]: "buy", stop_sell["id"]: "sell"}
        pending = [exchange.fetch_order(i) for i in ids]
        assert all(o["status"] == "open" and o["info"]["trigger_status"] == "STOP_PENDING" for o in pending)
        assert [stop_direction(o) for o in pending] == ["STOP_DIRECTION_STOP_UP", "STOP_DIRECTION_STOP_DOWN"]

        def triggered() -> list[dict[str, Any]]:
            orders = [exchange.fetch_order(i) for i in ids]
            return [o for o in orders if o["info"]["trigger_status"] == "STOP_TRIGGERED"]

        fired = wait_for(triggered, 20, "either stop of the bracket triggered")
        for order in fired:
            order = wait_for(
                lambda o=order: (x := exchange.fetch_order(o["id"]))["status"] == "closed" and x, 5, "fill"
            )
            assert D(order["filled"]) == Decimal("0.001") and order["info"]["order_type"] == "STOP_LIMIT"
            if order["side"] == "buy":
                assert order["average"] <= D(order["price"])
            else:
                assert order["average"] >= D(order["price"])
        for order_id in ids:
            if exchange.fetch_order(order_id)["status"] == "open":
                try:
                    exchange.cancel_order(order_id, SYMBOL)
                except ccxt.BadRequest:  # it triggered and filled in between
                    assert exchange.fetch_order(order_id)["status"] == "closed"
        trades = exchange.fetch_my_trades(SYMBOL)
        filled = [o for o in (exchange.fetch_order(i) for i in ids) if o["status"] == "closed"]
        assert sorted(t["order"] for t in trades) == sorted(o["id"] for o in filled) and trades
        expected = implied_balances(start, trades, markets)
        assert_balance_agrees(fetch_balance_via(exchange, V3), expected, increments)
    finally:
        exchange.close()


def test_gtd_fok_and_ioc_limit_orders(start_sim: SimFactory) -> None:
    """On a market 600 times faster, so that a GTD order expires in a fraction of a real second."""
    secret, public = ec_key()
    sim = start_sim(public, SIM_SPEED="600")
    start = starting_balances(sim)
    exchange = ccxt.coinbase(coinbase_options(sim, secret))
    try:
        markets = exchange.load_markets()
        btc = markets[SYMBOL]
        ticker = exchange.fetch_ticker(SYMBOL)
        above, below = round(ticker["ask"] * 1.01, 2), round(ticker["bid"] * 0.9, 2)

        fok = exchange.fetch_order(
            exchange.create_order(SYMBOL, "limit", "buy", 0.0002, above, {"timeInForce": "FOK"})["id"]
        )
        assert fok["status"] == "closed" and fok["timeInForce"] == "FOK" and D(fok["filled"]) == Decimal("0.0002")
        assert "limit_limit_fok" in fok["info"]["order_configuration"]
        killed = exchange.fetch_order(
            exchange.create_order(SYMBOL, "limit", "buy", 0.0002, below, {"timeInForce": "FOK"})["id"]
        )
        assert killed["status"] == "canceled" and killed["filled"] == 0
        ioc = exchange.fetch_order(
            exchange.create_order(SYMBOL, "limit", "buy", 0.0002, below, {"timeInForce": "IOC"})["id"]
        )
        assert ioc["status"] == "canceled" and ioc["filled"] == 0 and ioc["timeInForce"] == "IOC"

        end = iso(exchange.fetch_time() + 86_400_000)  # the simulated clock's day: more than two real minutes
        gtd = exchange.create_order(SYMBOL, "limit", "buy", 0.001, below, {"timeInForce": "GTD", "end_time": end})
        placed = exchange.fetch_order(gtd["id"])
        assert placed["status"] == "open" and placed["timeInForce"] == "GTD"
        assert placed["info"]["order_configuration"]["limit_limit_gtd"]["end_time"] == end
        trades = exchange.fetch_my_trades(SYMBOL)
        expected = implied_balances(start, trades, markets)
        held = {"USD": buy_hold(Decimal("0.001"), D(below), btc["maker"])}
        assert_balance_agrees(fetch_balance_via(exchange, V3), expected, steps(btc), held)
        exchange.cancel_order(gtd["id"])
        assert exchange.fetch_order(gtd["id"])["status"] == "canceled"

        soon = exchange.create_order(
            SYMBOL, "limit", "buy", 0.001, below, {"end_time": iso(exchange.fetch_time() + 120_000)}
        )  # two simulated minutes: a fifth of a real second
        expired = wait_for(
            lambda: (o := exchange.fetch_order(soon["id"]))["status"] != "open" and o, 5, "the GTD order expired"
        )
        assert expired["status"] == "canceled" and expired["info"]["status"] == "EXPIRED" and expired["filled"] == 0
        assert [t["order"] for t in exchange.fetch_my_trades(SYMBOL)] == [fok["id"]]
        assert_balance_agrees(fetch_balance_via(exchange, V3), expected, steps(btc))
    finally:
        exchange.close()


# --- errors -------------------------------------------------------------------------------------------------------


def test_an_unknown_order_is_answered_as_coinbase_answers_it(start_sim: SimFactory) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    exchange = ccxt.coinbase(coinbase_options(sim, secret))
    try:
        exchange.load_markets()
        unknown = str(uuid.uuid4())
        # Coinbase: 404 {"error": "NOT_FOUND", "message": "order with this orderID was not found", ...}; CCXT maps
        # neither the code nor the message (its broad rule reads the "error" field) to OrderNotFound
        with pytest.raises(ccxt.ExchangeError, match="order with this orderID was not found"):
            exchange.fetch_order(unknown)
        request = exchange.sign(
            "brokerage/orders/historical/{order_id}", ["v3", "private"], "GET", {"order_id": unknown}
        )
        answer = httpx.get(request["url"], headers=request["headers"])  # the request CCXT sends, signed by CCXT
        assert answer.status_code == 404
        body = answer.json()
        assert body["message"] == body["error_details"] == "order with this orderID was not found"
        assert body["error"] in ("NOT_FOUND", "unknown")
        with pytest.raises(ccxt.BadRequest):  # batch_cancel answers success false, UNKNOWN_CANCEL_ORDER
            exchange.cancel_order(unknown)
        with pytest.raises(ccxt.InsufficientFunds):
            exchange.create_market_buy_order_with_cost(SYMBOL, 10_000_000)
    finally:
        exchange.close()


def test_breaking_the_limits_raises_rate_limit_exceeded(start_sim: SimFactory) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    limits = sim_config(sim)["exchange_sim"]["rate_limits"]
    exchange = ccxt.coinbase(coinbase_options(sim, secret) | {"enableRateLimit": False})  # CCXT's own pacing off
    try:
        exchange.load_markets()
        time.sleep(1.1)  # fresh one-second windows, public (per IP) and private (per key)
        done = 0
        with pytest.raises(ccxt.RateLimitExceeded):
            for _ in range(limits["public_per_s"] + 5):
                exchange.fetch_ticker(SYMBOL)
                done += 1
        assert done == limits["public_per_s"]
        done = 0
        with pytest.raises(ccxt.RateLimitExceeded):
            for _ in range(limits["private_per_s"] + 5):
                exchange.fetch_open_orders(SYMBOL)
                done += 1
        assert done == limits["private_per_s"]
        set_faults(sim, html_429_fraction=1.0)  # the HTML 429 page a proxy in front of Coinbase may answer
        with pytest.raises(ccxt.RateLimitExceeded):
            exchange.fetch_time({"method": "v3PublicGetBrokerageTime"})
        set_faults(sim)
    finally:
        exchange.close()


def test_a_key_the_simulator_does_not_know_is_refused(start_sim: SimFactory) -> None:
    _, public = ec_key()
    stranger, _ = ec_key()
    sim = start_sim(public)
    exchange = ccxt.coinbase(coinbase_options(sim, stranger))
    keyless = ccxt.coinbase({"urls": {"api": {"rest": sim}}})
    oauth = ccxt.coinbase({"urls": {"api": {"rest": sim}}, "token": "an-oauth-token-not-a-jwt"})
    try:
        with pytest.raises(ccxt.AuthenticationError):
            exchange.load_markets()  # with keys it reads transaction_summary: refused
        with pytest.raises(ccxt.AuthenticationError):
            exchange.v3PrivateGetBrokerageAccounts()  # fetch_balance with options.fetchBalance v3
        with pytest.raises(ccxt.AuthenticationError):
            exchange.v2PrivateGetAccounts()  # fetch_balance's default, v2
        keyless.load_markets()  # public calls need no key
        seen = httpx.get(f"{sim}/sim/stats").json()["endpoints"]["accounts"]["requests"]
        # CCXT refuses before sending anything; 4.5.90's Python sign() then fails on `'Bearer ' + self.token` (None)
        # with a TypeError where its JavaScript raises AuthenticationError (token '' there)
        with pytest.raises((ccxt.AuthenticationError, TypeError)):
            keyless.fetch_balance({"v3": True})
        assert httpx.get(f"{sim}/sim/stats").json()["endpoints"]["accounts"]["requests"] == seen
        with pytest.raises(ccxt.AuthenticationError):
            oauth.v3PrivateGetBrokerageAccounts()  # sent with a bearer that is no CDP JWT: the simulator's 401
        assert httpx.get(f"{sim}/sim/stats").json()["endpoints"]["accounts"]["requests"] == seen + 1
    finally:
        for each in (exchange, keyless, oauth):
            each.close()


class SkewedCoinbase(ccxt.coinbase):
    """A CCXT whose clock is ten minutes behind: its JWTs have expired when they arrive."""

    def seconds(self) -> int:  # type: ignore[override]
        return int(time.time()) - 600


class NonceReusingCoinbase(ccxt.coinbase):
    """A CCXT that writes the same JWT nonce every time: its second JWT is a replay."""

    def random_bytes(self, length: int) -> str:  # type: ignore[override]
        return "0" * (2 * length)


def test_expired_and_replayed_jwts_are_refused(start_sim: SimFactory) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    skewed = SkewedCoinbase(coinbase_options(sim, secret))
    reusing = NonceReusingCoinbase(coinbase_options(sim, secret))
    try:
        with pytest.raises(ccxt.AuthenticationError):
            skewed.v3PrivateGetBrokerageAccounts()
        assert reusing.v3PrivateGetBrokerageAccounts()["accounts"]
        with pytest.raises(ccxt.AuthenticationError):
            reusing.v3PrivateGetBrokerageAccounts()
    finally:
        skewed.close()
        reusing.close()


# --- Ed25519 ------------------------------------------------------------------------------------------------------


def test_ed25519_key(start_sim: SimFactory) -> None:
    secret, public = ed25519_key()
    stranger, _ = ed25519_key()
    sim = start_sim(public)
    start = starting_balances(sim)
    fees = sim_config(sim)["exchange_sim"]["fees"]
    exchange = ccxt.coinbase({"apiKey": ED25519_KEY_ID, "secret": secret, "urls": {"api": {"rest": sim}}})
    other = ccxt.coinbase({"apiKey": ED25519_KEY_ID, "secret": stranger, "urls": {"api": {"rest": sim}}})
    try:
        markets = exchange.load_markets()
        btc = markets[SYMBOL]
        assert D(btc["taker"]) == Decimal(fees["taker_pct"]) / 100  # transaction_summary, signed with EdDSA
        increments = steps(btc)
        opening = {code: start.get(code, Decimal(0)) for code in ("BTC", "USD")}
        assert_balance_agrees(exchange.fetch_balance(), opening, increments)
        assert_balance_agrees(fetch_balance_via(exchange, V3), opening, increments)
        created = exchange.create_market_buy_order_with_cost(SYMBOL, 50)
        assert exchange.fetch_order(created["id"], SYMBOL)["status"] == "closed"
        trades = exchange.fetch_my_trades(SYMBOL)
        assert [t["order"] for t in trades] == [created["id"]]
        expected = implied_balances(start, trades, markets)
        assert_balance_agrees(exchange.fetch_balance(), expected, increments)
        assert_balance_agrees(fetch_balance_via(exchange, V3), expected, increments)
        with pytest.raises(ccxt.AuthenticationError):
            other.fetch_balance()
    finally:
        exchange.close()
        other.close()


# --- async --------------------------------------------------------------------------------------------------------


async def test_async_support(start_sim: SimFactory) -> None:
    secret, public = ec_key()
    sim = start_sim(public)
    start = starting_balances(sim)
    exchange = ccxt.async_support.coinbase(coinbase_options(sim, secret))
    try:
        markets = await exchange.load_markets()
        btc = markets[SYMBOL]
        ticker = await exchange.fetch_ticker(SYMBOL)
        assert 0 < ticker["bid"] < ticker["ask"]
        price = round(ticker["bid"] * 0.5, 2)
        resting = await exchange.create_order(SYMBOL, "limit", "buy", 0.001, price)
        bought = await exchange.create_order(SYMBOL, "market", "buy", 25, params={"cost": 25})
        placed, filled = await asyncio.gather(exchange.fetch_order(resting["id"]), exchange.fetch_order(bought["id"]))
        assert placed["status"] == "open" and placed["price"] == price
        assert filled["status"] == "closed" and filled["filled"] > 0
        trades = await exchange.fetch_my_trades(SYMBOL)
        assert [t["order"] for t in trades] == [bought["id"]]
        expected = implied_balances(start, trades, markets)
        held = {"USD": buy_hold(Decimal("0.001"), D(price), btc["maker"])}
        exchange.options["fetchBalance"] = V3
        assert_balance_agrees(await exchange.fetch_balance(), expected, steps(btc), held)
        await exchange.cancel_order(resting["id"], SYMBOL)
        assert (await exchange.fetch_order(resting["id"]))["status"] == "canceled"
        v3 = await exchange.fetch_balance()
        exchange.options["fetchBalance"] = V2
        v2 = await exchange.fetch_balance()
        for balance in (v2, v3):
            assert_balance_agrees(balance, expected, steps(btc))
    finally:
        await exchange.close()
