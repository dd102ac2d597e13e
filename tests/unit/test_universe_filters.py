"""The universe's filters, ranking, tiers and adaptive TTL on a crafted catalog in Coinbase's JSON shape."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.universe.filters import products_ttl_s, rank, screen, spread_bps
from services.universe.settings import AdaptiveTtl, UniverseConfig
from shared.exchange.models import PriceBook
from shared.exchange.responses import read_products

DAY = 86_400.0
NOW = 1_800_000_000.0


def product(product_id: str, **fields: Any) -> dict[str, Any]:
    base, quote = product_id.split("-")
    return {
        "product_id": product_id,
        "price": "100.00",
        "price_percentage_change_24h": "1.5",
        "volume_24h": "50000",
        "approximate_quote_24h_volume": "5000000",
        "base_increment": "0.0001",
        "quote_increment": "0.01",
        "quote_min_size": "1",
        "status": "online",
        "trading_disabled": False,
        "is_disabled": False,
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "auction_mode": False,
        "view_only": False,
        "base_currency_id": base,
        "quote_currency_id": quote,
        **fields,
    }


def book(product_id: str, bid: str, ask: str) -> PriceBook:
    return PriceBook.model_validate(
        {"product_id": product_id, "bids": [{"price": bid, "size": "1"}], "asks": [{"price": ask, "size": "1"}]}
    )


CATALOG = [
    product("BTC-USD", approximate_quote_24h_volume="900000000"),
    product("ETH-USD", approximate_quote_24h_volume="500000000"),
    product("SOL-USDC", approximate_quote_24h_volume="80000000"),
    product("ADA-USD", approximate_quote_24h_volume="20000000"),
    product("WIDE-USD", approximate_quote_24h_volume="30000000"),
    product("NOBOOK-USD", approximate_quote_24h_volume="25000000"),
    product("BTC-EUR"),
    product("OFF-USD", status="offline"),
    product("DIS-USD", trading_disabled=True),
    product("ISDIS-USD", is_disabled=True),
    product("CAN-USD", cancel_only=True),
    product("VIEW-USD", view_only=True),
    product("AUC-USD", auction_mode=True),
    product("LIM-USD", limit_only=True),
    product("POST-USD", post_only=True),
    product("USDT-USD"),
    product("PENNY-USD", price="0.00001"),
    product("THIN-USD", approximate_quote_24h_volume="999"),
    product("NEW-USD"),
    product("BANNED-USD"),
    product("NOPRICE-USD", price=None),
    product("BADPRICE-USD", price="abc"),
    product("HUGE-USD", approximate_quote_24h_volume=None, volume_24h="1e600000", price="1e600000"),
    product("ZERO-USD", price="0"),
    {"price": "1"},
    None,
]
BOOKS = {pid: book(pid, "99.99", "100.01") for pid in ("BTC-USD", "ETH-USD", "SOL-USDC", "ADA-USD", "NEW-USD")} | {
    "WIDE-USD": book("WIDE-USD", "99.00", "101.00")
}
CONFIG = UniverseConfig(
    quote_currencies=["USD", "USDC"],
    min_quote_volume_24h=1_000_000,
    max_products=3,
    core_size=2,
    max_spread_bps=50,
    min_price=0.001,
    min_listing_age_days=7,
    deny=["BANNED-USD"],
)


def test_every_product_is_kept_or_left_out_with_its_reason() -> None:
    products, unreadable = read_products(CATALOG)
    first_seen = {"NEW-USD": NOW - 2 * DAY}
    candidates, excluded = screen(products, unreadable, CONFIG, first_seen=first_seen, now=NOW)
    members, unranked = rank(candidates, BOOKS, CONFIG)
    reasons = {e.product_id: e.reason for e in excluded + unranked}
    assert reasons == {
        "BTC-EUR": "quote_currency",
        "OFF-USD": "offline",
        "DIS-USD": "trading_disabled",
        "ISDIS-USD": "is_disabled",
        "CAN-USD": "cancel_only",
        "VIEW-USD": "view_only",
        "AUC-USD": "auction_mode",
        "LIM-USD": "limit_only",
        "POST-USD": "post_only",
        "USDT-USD": "stablecoin",
        "PENNY-USD": "low_price",
        "THIN-USD": "low_volume",
        "NEW-USD": "new_listing",
        "BANNED-USD": "denied",
        "NOPRICE-USD": "missing_field",
        "BADPRICE-USD": "malformed",
        "HUGE-USD": "malformed",
        "ZERO-USD": "low_price",
        "products[24]": "malformed",
        "products[25]": "malformed",
        "WIDE-USD": "wide_spread",
        "NOBOOK-USD": "no_book",
        "ADA-USD": "rank",
    }
    assert [(m.product_id, m.tier) for m in members] == [
        ("BTC-USD", "core"),
        ("ETH-USD", "core"),
        ("SOL-USDC", "rotational"),
    ]
    btc = members[0]
    assert btc.quote_volume_24h == Decimal("900000000") and btc.spread_bps == pytest.approx(2.0, abs=0.01)
    details = {e.product_id: e.detail for e in excluded + unranked}
    assert "price: 'abc' is not a decimal" in details["BADPRICE-USD"]
    assert details["NOPRICE-USD"] == "price is missing"
    assert details["products[24]"].startswith("product_id")
    assert details["ZERO-USD"] == "price 0 is not positive"
    assert details["WIDE-USD"] == "spread 200.0 bps is above 50"


def test_allow_list_keeps_only_its_products_and_old_listings_pass() -> None:
    products, unreadable = read_products(CATALOG)
    config = CONFIG.model_copy(update={"allow": ["ETH-USD", "NEW-USD"], "deny": []})
    first_seen = {"NEW-USD": NOW - 30 * DAY}
    candidates, excluded = screen(products, unreadable, config, first_seen=first_seen, now=NOW)
    assert [p.product_id for p in candidates] == ["ETH-USD", "NEW-USD"]
    assert {e.reason for e in excluded} == {"not_allowed", "malformed"}


def test_limit_only_and_post_only_may_be_kept() -> None:
    products, _ = read_products([product("LIM-USD", limit_only=True), product("POST-USD", post_only=True)])
    config = CONFIG.model_copy(update={"exclude_limit_only": False, "exclude_post_only": False})
    candidates, excluded = screen(products, [], config, first_seen={}, now=NOW)
    assert len(candidates) == 2 and not excluded


def test_volume_falls_back_to_base_volume_times_price() -> None:
    products, _ = read_products([product("X-USD", approximate_quote_24h_volume=None, volume_24h="20000")])
    candidates, _ = screen(products, [], CONFIG, first_seen={}, now=NOW)
    members, _ = rank(candidates, {"X-USD": book("X-USD", "99.99", "100.01")}, CONFIG)
    assert members[0].quote_volume_24h == Decimal("2000000.00")


def test_spread_needs_both_sides_uncrossed() -> None:
    assert spread_bps(book("A-USD", "99", "101")) == pytest.approx(200.0)
    assert spread_bps(book("A-USD", "101", "99")) is None
    empty = PriceBook.model_validate({"product_id": "A-USD", "bids": [], "asks": [{"price": "1", "size": "1"}]})
    assert spread_bps(empty) is None


def with_change(change: str) -> list[Any]:
    return read_products([product(f"C{i}-USD", price_percentage_change_24h=change) for i in range(5)])[0]


@pytest.mark.parametrize(("change", "minutes"), [("-1", 15.0), ("2", 15.0), ("5", 8.5), ("-8", 2.0), ("30", 2.0)])
def test_adaptive_ttl_is_shorter_when_the_market_moves(change: str, minutes: float) -> None:
    config = CONFIG.model_copy(update={"adaptive_ttl": AdaptiveTtl(enabled=True)})
    assert products_ttl_s(with_change(change), config) == pytest.approx(minutes * 60)


def test_fixed_ttl_unless_adaptive_and_zero_disables() -> None:
    assert products_ttl_s(with_change("30"), CONFIG) == 300
    disabled = CONFIG.model_copy(update={"products_cache_minutes": 0, "adaptive_ttl": AdaptiveTtl(enabled=True)})
    assert products_ttl_s(with_change("30"), disabled) == 0


def test_adaptive_ttl_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="min_minutes"):
        AdaptiveTtl(min_minutes=20, max_minutes=15)
    with pytest.raises(ValueError, match="calm_change_pct"):
        AdaptiveTtl(calm_change_pct=9, volatile_change_pct=8)


def test_waiters_must_outlast_a_dead_lock_holder() -> None:
    with pytest.raises(ValueError, match="build_wait_s"):
        UniverseConfig(lock_timeout_s=20, build_wait_s=10)
