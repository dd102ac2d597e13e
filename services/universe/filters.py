"""Which products make the universe, and why the others do not: pure functions over the product list."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from services.universe.settings import UniverseConfig
from shared.exchange.models import PriceBook, Product
from shared.exchange.responses import UnreadableProduct

Tier = Literal["core", "rotational"]
# Every reason a product can be left out with (a bounded set: it labels trader_universe_excluded).
Reason = Literal[
    "malformed",
    "missing_field",
    "denied",
    "not_allowed",
    "quote_currency",
    "offline",
    "trading_disabled",
    "is_disabled",
    "cancel_only",
    "view_only",
    "auction_mode",
    "limit_only",
    "post_only",
    "stablecoin",
    "low_price",
    "new_listing",
    "low_volume",
    "no_book",
    "wide_spread",
    "rank",
]
DAY_S = 86_400
BPS = Decimal(10_000)


class Member(BaseModel):
    product_id: str
    base: str
    quote: str
    tier: Tier
    price: Decimal
    quote_volume_24h: Decimal
    change_24h_pct: Decimal | None
    spread_bps: float


class Exclusion(BaseModel):
    product_id: str
    reason: Reason
    detail: str


def quote_volume(product: Product) -> Decimal | None:
    """24h volume in the quote currency: Coinbase's own figure, else base volume times price."""
    if product.approximate_quote_24h_volume is not None:
        return product.approximate_quote_24h_volume
    if product.volume_24h is not None and product.price is not None:
        return product.volume_24h * product.price
    return None


def _refusal(product: Product, config: UniverseConfig, *, first_seen: float | None, now: float) -> Exclusion | None:
    def out(reason: Reason, detail: str) -> Exclusion:
        return Exclusion(product_id=product.product_id, reason=reason, detail=detail)

    pid = product.product_id
    if pid in config.deny:
        return out("denied", "on the deny list")
    if config.allow and pid not in config.allow:
        return out("not_allowed", "not on the allow list")
    for name in ("price", "quote_currency_id", "base_currency_id", "status"):
        if getattr(product, name) in (None, ""):
            return out("missing_field", f"{name} is missing")
    try:
        volume = quote_volume(product)
    except ArithmeticError:
        return out("malformed", f"volume_24h {product.volume_24h} times price {product.price} is out of range")
    if volume is None:
        return out("missing_field", "approximate_quote_24h_volume and volume_24h are missing")
    assert product.price is not None and product.base_currency_id is not None
    if product.quote_currency_id not in config.quote_currencies:
        return out("quote_currency", f"quoted in {product.quote_currency_id}, not in {config.quote_currencies}")
    if str(product.status).lower() != "online":
        return out("offline", f"status {product.status}")
    for flag in ("trading_disabled", "is_disabled", "cancel_only", "view_only", "auction_mode"):
        if getattr(product, flag):
            return out(flag, f"{flag} is set")  # type: ignore[arg-type]
    if config.exclude_limit_only and product.limit_only:
        return out("limit_only", "accepts limit orders only")
    if config.exclude_post_only and product.post_only:
        return out("post_only", "accepts post-only orders only")
    if product.base_currency_id in config.stablecoins:
        return out("stablecoin", f"{product.base_currency_id} is a stablecoin")
    if product.price <= 0:
        return out("low_price", f"price {product.price} is not positive")
    if product.price < Decimal(str(config.min_price)):
        return out("low_price", f"price {product.price} is below {config.min_price}")
    if config.min_listing_age_days and first_seen is not None:
        age_days = (now - first_seen) / DAY_S
        if age_days < config.min_listing_age_days:
            return out("new_listing", f"first seen {age_days:.1f} days ago, under {config.min_listing_age_days}")
    if volume < Decimal(str(config.min_quote_volume_24h)):
        return out("low_volume", f"24h quote volume {volume:.0f} is below {config.min_quote_volume_24h:.0f}")
    return None


def screen(
    products: Iterable[Product],
    unreadable: Iterable[UnreadableProduct],
    config: UniverseConfig,
    *,
    first_seen: Mapping[str, float],
    now: float,
) -> tuple[list[Product], list[Exclusion]]:
    """The products that pass every filter but the spread, and every other one with its reason."""
    excluded = [Exclusion(product_id=u.product_id, reason="malformed", detail=u.problem) for u in unreadable]
    survivors = []
    for product in products:
        refusal = _refusal(product, config, first_seen=first_seen.get(product.product_id), now=now)
        if refusal is None:
            survivors.append(product)
        else:
            excluded.append(refusal)
    return survivors, excluded


def spread_bps(book: PriceBook) -> float | None:
    """The bid-ask spread over the mid price, in basis points; None without both sides."""
    if not book.bids or not book.asks:
        return None
    bid, ask = book.bids[0].price, book.asks[0].price
    if bid <= 0 or ask < bid:
        return None
    try:
        return float((ask - bid) / ((ask + bid) / 2) * BPS)
    except ArithmeticError:
        return None


def rank(
    candidates: Iterable[Product], books: Mapping[str, PriceBook], config: UniverseConfig
) -> tuple[list[Member], list[Exclusion]]:
    """Spread filter, then the highest 24h quote volume first, cut at max_products, the first core_size core."""
    liquid: list[tuple[Product, float]] = []
    excluded: list[Exclusion] = []
    for product in candidates:
        book = books.get(product.product_id)
        spread = spread_bps(book) if book is not None else None
        if spread is None:
            excluded.append(
                Exclusion(product_id=product.product_id, reason="no_book", detail="no usable best bid and ask")
            )
        elif spread > config.max_spread_bps:
            excluded.append(
                Exclusion(
                    product_id=product.product_id,
                    reason="wide_spread",
                    detail=f"spread {spread:.1f} bps is above {config.max_spread_bps:g}",
                )
            )
        else:
            liquid.append((product, spread))
    liquid.sort(key=lambda item: (-(quote_volume(item[0]) or 0), item[0].product_id))
    members = []
    for position, (product, spread) in enumerate(liquid):
        if position >= config.max_products:
            excluded.append(
                Exclusion(
                    product_id=product.product_id,
                    reason="rank",
                    detail=f"volume rank {position + 1} is past max_products {config.max_products}",
                )
            )
            continue
        assert product.price is not None and product.base_currency_id and product.quote_currency_id
        members.append(
            Member(
                product_id=product.product_id,
                base=product.base_currency_id,
                quote=product.quote_currency_id,
                tier="core" if position < config.core_size else "rotational",
                price=product.price,
                quote_volume_24h=quote_volume(product) or Decimal(0),
                change_24h_pct=product.price_percentage_change_24h,
                spread_bps=round(spread, 3),
            )
        )
    return members, excluded


def products_ttl_s(products: Iterable[Product], config: UniverseConfig) -> float:
    """How long a freshly fetched product list stays fresh: fixed, or from the market's volatility measured on
    `products` (the screened ones: stablecoins and disabled products would read as a calm market)."""
    adaptive = config.adaptive_ttl
    if not adaptive.enabled or config.products_cache_minutes == 0:
        return config.products_cache_minutes * 60.0
    ranked = sorted(
        (
            p
            for p in products
            if p.quote_currency_id in config.quote_currencies
            and p.price_percentage_change_24h is not None
            and quote_volume(p) is not None
        ),
        key=lambda p: -(quote_volume(p) or 0),
    )[: config.max_products]
    if not ranked:
        return adaptive.max_minutes * 60.0
    change = float(statistics.median(abs(p.price_percentage_change_24h or 0) for p in ranked))
    calm, volatile = adaptive.calm_change_pct, adaptive.volatile_change_pct
    position = min(max((change - calm) / (volatile - calm), 0.0), 1.0)
    return (adaptive.max_minutes - position * (adaptive.max_minutes - adaptive.min_minutes)) * 60.0
