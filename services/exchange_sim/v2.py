"""The Coinbase App (v2) endpoints CCXT's coinbase class calls by default: currencies, exchange rates, time,
accounts, in the v2 shapes (`data`, and `pagination` on lists)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.exchange_sim.api import CoinbaseError, CoinbaseJSON, ExchangeDep, Private, Public
from services.exchange_sim.exchange import SimExchange
from services.exchange_sim.views import ACCOUNT_NAMESPACE, FIAT, num, rfc3339

v2_router = APIRouter(prefix="/v2", tags=["coinbase v2"], default_response_class=CoinbaseJSON)
ASSET_NAMESPACE = uuid.UUID("0b6f3a4e-51c3-4c7b-9d0c-5e3f5d7f4a21")
FIAT_NAMES = {"USD": "US Dollar", "EUR": "Euro", "GBP": "British Pound"}
CRYPTO_EXPONENT = 8


def names(sim: SimExchange) -> dict[str, str]:
    """Every currency the catalog trades, by code, with its name."""
    found: dict[str, str] = {}
    for product in sim.catalog:
        found.setdefault(product.base, product.base_name)
        found.setdefault(product.quote, product.quote_name)
    return found


def usd_prices(sim: SimExchange, now: float) -> dict[str, Decimal]:
    """The USD price of every currency that trades against USD, directly or through one other currency."""
    prices = {"USD": Decimal(1)}
    pairs = {(p.base, p.quote): p.product_id for p in sim.catalog}
    for (base, quote), product_id in pairs.items():
        if quote == "USD":
            prices[base] = Decimal(repr(sim.market.price(product_id, now)))
    for (base, quote), product_id in pairs.items():
        if base not in prices and quote in prices:
            prices[base] = Decimal(repr(sim.market.price(product_id, now))) * prices[quote]
        elif quote not in prices and base in prices:
            prices[quote] = prices[base] / Decimal(repr(sim.market.price(product_id, now)))
    return prices


def currency_json(code: str, name: str, index: int) -> dict[str, Any]:
    if code in FIAT:
        return {"id": code, "name": FIAT_NAMES.get(code, name), "min_size": "0.01"}
    return {
        "asset_id": str(uuid.uuid5(ASSET_NAMESPACE, code)),
        "code": code,
        "name": name,
        "color": "#5B616E",
        "sort_index": index,
        "exponent": CRYPTO_EXPONENT,
        "type": "crypto",
        "address_regex": "",
    }


def v2_account_json(code: str, name: str, balance: Decimal, created: float) -> dict[str, Any]:
    account_id = str(uuid.uuid5(ACCOUNT_NAMESPACE, code))  # the same account as /api/v3/brokerage/accounts
    fiat = code in FIAT
    return {
        "id": account_id,
        "name": f"{code} Wallet",
        "primary": code == "USD",
        "type": "fiat" if fiat else "wallet",
        "currency": {
            "code": code,
            "name": FIAT_NAMES.get(code, name),
            "color": "#5B616E",
            "sort_index": 0,
            "exponent": 2 if fiat else CRYPTO_EXPONENT,
            "type": "fiat" if fiat else "crypto",
        },
        "balance": {"amount": num(balance), "currency": code},
        "created_at": rfc3339(created),
        "updated_at": rfc3339(created),
        "resource": "account",
        "resource_path": f"/v2/accounts/{account_id}",
        "allow_deposits": True,
        "allow_withdrawals": True,
    }


@v2_router.get("/time", name="v2_time", dependencies=Public, summary="Server time (v2)")
async def time(sim: ExchangeDep) -> CoinbaseJSON:
    now = sim.clock.now()
    return CoinbaseJSON({"data": {"iso": rfc3339(now), "epoch": int(now)}})


@v2_router.get("/currencies", name="v2_currencies", dependencies=Public, summary="Fiat currencies (v2)")
async def currencies(sim: ExchangeDep) -> CoinbaseJSON:
    fiat = sorted(code for code in names(sim) if code in FIAT)
    return CoinbaseJSON({"data": [currency_json(code, FIAT_NAMES.get(code, code), 0) for code in fiat]})


@v2_router.get("/currencies/crypto", name="v2_currencies_crypto", dependencies=Public, summary="Crypto currencies (v2)")
async def crypto_currencies(sim: ExchangeDep) -> CoinbaseJSON:
    crypto = [(code, name) for code, name in names(sim).items() if code not in FIAT]
    return CoinbaseJSON({"data": [currency_json(code, name, i) for i, (code, name) in enumerate(crypto)]})


@v2_router.get("/exchange-rates", name="v2_exchange_rates", dependencies=Public, summary="Exchange rates (v2)")
async def exchange_rates(sim: ExchangeDep, currency: str = "USD") -> CoinbaseJSON:
    prices = usd_prices(sim, sim.clock.now())
    base = prices.get(currency.upper())
    if base is None:
        raise CoinbaseError(400, "invalid_request", f"currency {currency!r} is not one the exchange prices")
    rates = {code: num((base / price).quantize(Decimal("1e-12")).normalize()) for code, price in sorted(prices.items())}
    return CoinbaseJSON({"data": {"currency": currency.upper(), "rates": rates}})


@v2_router.get("/accounts", name="v2_accounts", dependencies=Private, summary="Accounts (v2)")
async def accounts(
    sim: ExchangeDep,
    limit: Annotated[int, Query(ge=1, le=300)] = 25,
    starting_after: str | None = None,
) -> CoinbaseJSON:
    known = names(sim)
    codes = sorted(set(sim.account.balances) | set(sim.account.holds))
    ids = [str(uuid.uuid5(ACCOUNT_NAMESPACE, code)) for code in codes]
    first = 0
    if starting_after:
        if starting_after not in ids:
            raise CoinbaseError(400, "invalid_request", f"starting_after {starting_after!r} is not an account id")
        first = ids.index(starting_after) + 1
    page = codes[first : first + limit]
    following = ids[first + limit - 1] if first + limit < len(codes) else None
    return CoinbaseJSON(
        {
            "pagination": {
                "ending_before": None,
                "starting_after": starting_after,
                "previous_ending_before": None,
                "next_starting_after": following,
                "limit": limit,
                "order": "asc",
                "previous_uri": None,
                "next_uri": f"/v2/accounts?limit={limit}&starting_after={following}" if following else None,
            },
            "data": [
                v2_account_json(
                    code, known.get(code, code), sim.account.balances.get(code, Decimal(0)), sim.clock.origin
                )
                for code in page
            ],
        }
    )
