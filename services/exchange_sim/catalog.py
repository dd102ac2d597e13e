"""The simulator's product catalog: realistic spot pairs with Coinbase-like increments, minimums and status flags."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from decimal import Decimal

# (ticker, name, USD price in 2026, typical daily volatility, base volume per minute), most traded first.
MAJORS: tuple[tuple[str, str, float, float, float], ...] = (
    ("BTC", "Bitcoin", 96_500.0, 0.028, 9.0),
    ("ETH", "Ethereum", 3_450.0, 0.038, 140.0),
    ("SOL", "Solana", 182.0, 0.050, 1_800.0),
    ("XRP", "XRP", 2.35, 0.050, 180_000.0),
    ("DOGE", "Dogecoin", 0.215, 0.060, 1_500_000.0),
    ("ADA", "Cardano", 0.74, 0.055, 300_000.0),
    ("AVAX", "Avalanche", 31.5, 0.060, 6_000.0),
    ("LINK", "Chainlink", 18.4, 0.055, 9_000.0),
    ("LTC", "Litecoin", 96.0, 0.045, 1_200.0),
    ("SUI", "Sui", 3.6, 0.070, 60_000.0),
    ("DOT", "Polkadot", 5.2, 0.055, 25_000.0),
    ("BCH", "Bitcoin Cash", 455.0, 0.045, 150.0),
    ("SHIB", "Shiba Inu", 0.0000148, 0.065, 9_000_000_000.0),
    ("UNI", "Uniswap", 9.1, 0.060, 8_000.0),
    ("AAVE", "Aave", 265.0, 0.060, 250.0),
    ("NEAR", "NEAR Protocol", 4.1, 0.065, 20_000.0),
    ("APT", "Aptos", 8.3, 0.065, 8_000.0),
    ("PEPE", "Pepe", 0.0000118, 0.085, 20_000_000_000.0),
    ("XLM", "Stellar", 0.36, 0.050, 300_000.0),
    ("HBAR", "Hedera", 0.225, 0.060, 500_000.0),
    ("ARB", "Arbitrum", 0.62, 0.065, 120_000.0),
    ("OP", "Optimism", 1.65, 0.065, 40_000.0),
    ("ATOM", "Cosmos", 6.1, 0.055, 12_000.0),
    ("ICP", "Internet Computer", 7.4, 0.060, 6_000.0),
    ("FIL", "Filecoin", 4.2, 0.060, 15_000.0),
    ("ETC", "Ethereum Classic", 22.5, 0.050, 2_500.0),
    ("RENDER", "Render", 6.3, 0.070, 7_000.0),
    ("INJ", "Injective", 19.8, 0.070, 2_000.0),
    ("TIA", "Celestia", 5.1, 0.075, 9_000.0),
    ("SEI", "Sei", 0.41, 0.075, 90_000.0),
    ("BONK", "Bonk", 0.0000205, 0.090, 3_000_000_000.0),
    ("WIF", "dogwifhat", 1.95, 0.095, 30_000.0),
    ("ONDO", "Ondo", 1.12, 0.070, 40_000.0),
    ("FET", "Artificial Superintelligence Alliance", 1.28, 0.075, 35_000.0),
    ("POL", "Polygon Ecosystem Token", 0.42, 0.060, 150_000.0),
    ("LDO", "Lido DAO", 1.55, 0.065, 25_000.0),
    ("IMX", "Immutable", 1.38, 0.070, 20_000.0),
    ("MKR", "Maker", 1_690.0, 0.055, 15.0),
    ("CRV", "Curve DAO Token", 0.71, 0.070, 60_000.0),
    ("COMP", "Compound", 56.0, 0.060, 400.0),
    ("SNX", "Synthetix", 1.82, 0.070, 12_000.0),
    ("GRT", "The Graph", 0.205, 0.065, 150_000.0),
    ("ALGO", "Algorand", 0.26, 0.060, 150_000.0),
    ("SAND", "The Sandbox", 0.36, 0.065, 70_000.0),
    ("MANA", "Decentraland", 0.35, 0.065, 60_000.0),
    ("AXS", "Axie Infinity", 6.2, 0.065, 2_500.0),
    ("APE", "ApeCoin", 1.05, 0.070, 25_000.0),
    ("JTO", "Jito", 2.6, 0.075, 8_000.0),
    ("XTZ", "Tezos", 0.92, 0.055, 20_000.0),
    ("EOS", "EOS", 0.68, 0.055, 30_000.0),
    ("ZEC", "Zcash", 41.0, 0.060, 600.0),
    ("DASH", "Dash", 29.0, 0.055, 500.0),
    ("ENS", "Ethereum Name Service", 24.5, 0.065, 800.0),
    ("QNT", "Quant", 102.0, 0.055, 120.0),
    ("EGLD", "MultiversX", 31.0, 0.060, 400.0),
    ("HNT", "Helium", 5.4, 0.070, 3_000.0),
    ("JASMY", "JasmyCoin", 0.021, 0.075, 900_000.0),
    ("1INCH", "1inch", 0.31, 0.065, 40_000.0),
    ("BAT", "Basic Attention Token", 0.205, 0.055, 40_000.0),
    ("CHZ", "Chiliz", 0.082, 0.065, 150_000.0),
)
# USD stablecoins: they stay within a few basis points of 1.
STABLECOINS: frozenset[str] = frozenset({"USDT", "DAI", "PYUSD", "USDS", "GUSD"})
STABLE_NAMES = {"USDT": "Tether", "DAI": "Dai", "PYUSD": "PayPal USD", "USDS": "Sky Dollar", "GUSD": "Gemini Dollar"}
QUOTE_NAMES = {"USD": "US Dollar", "USDC": "USDC", "EUR": "Euro", "BTC": "Bitcoin"}
EUR_USD = 1.16
REQUIRED = ("BTC-USD", "ETH-USD", "SOL-USD", "BTC-USDC", "ETH-USDC")
USDC_RANK, EUR_RANK, BTC_QUOTE_RANK = 20, 10, 16
STABLE_VOLATILITY = 0.0006
# A fiat price tick is at most a cent (Coinbase: BTC-USD, ETH-USD and SOL-USD all tick at 0.01).
MAX_FIAT_PRICE_INCREMENT = Decimal("0.01")
QUOTE_MAX_FIAT = Decimal(50_000_000)
QUOTE_MAX_BTC = Decimal(1_000)
SYLLABLES = ("ka", "zo", "ri", "ne", "lu", "ta", "vo", "xi", "mi", "ra", "qu", "fe", "do", "sy", "ba", "ny", "tr", "ix")
SUFFIXES = ("Protocol", "Network", "Finance", "Chain", "Token", "Labs", "AI", "Swap", "DAO", "Coin")
FLAG_KINDS = ("trading_disabled", "cancel_only", "limit_only", "post_only", "offline")


@dataclass(frozen=True, slots=True)
class ProductSpec:
    product_id: str
    base: str
    quote: str
    base_name: str
    quote_name: str
    base_increment: Decimal
    quote_increment: Decimal
    base_min_size: Decimal
    base_max_size: Decimal
    quote_min_size: Decimal
    quote_max_size: Decimal
    status: str
    trading_disabled: bool
    cancel_only: bool
    limit_only: bool
    post_only: bool
    is_new: bool
    initial_price: Decimal
    volatility: float
    volume: float


@dataclass(frozen=True, slots=True)
class _Base:
    ticker: str
    name: str
    usd_price: float
    volatility: float
    volume: float


def build_catalog(seed: int, size: int = 300) -> list[ProductSpec]:
    """About `size` spot products, the same for the same seed: majors first, then generated listings."""
    rng = random.Random(f"catalog:{seed}")
    specs = _ordered_pairs(rng, size)[:size]
    return _assign_statuses(rng, specs)


def _ordered_pairs(rng: random.Random, size: int) -> list[ProductSpec]:
    majors = [_Base(*row) for row in MAJORS]
    by_ticker = {b.ticker: b for b in majors}
    specs: dict[str, ProductSpec] = {}

    def add(base: _Base, quote: str) -> None:
        spec = _spec(base, quote, by_ticker["BTC"].usd_price)
        specs.setdefault(spec.product_id, spec)

    for product_id in REQUIRED:
        ticker, quote = product_id.split("-")
        add(by_ticker[ticker], quote)
    for ticker in sorted(STABLECOINS):
        add(_Base(ticker, STABLE_NAMES[ticker], 1.0, STABLE_VOLATILITY, 400_000.0), "USD")
    tether = _Base("USDT", STABLE_NAMES["USDT"], 1.0, STABLE_VOLATILITY, 400_000.0)
    add(tether, "USDC")
    add(tether, "EUR")
    for rank, base in enumerate(majors):
        add(base, "USD")
        if rank < USDC_RANK:
            add(base, "USDC")
        if rank < EUR_RANK:
            add(base, "EUR")
        if 0 < rank < BTC_QUOTE_RANK:
            add(base, "BTC")
    taken = set(by_ticker) | STABLECOINS | set(QUOTE_NAMES)
    count = 0
    while len(specs) < size:
        base = _generated_base(rng, taken)
        add(base, "USD")
        count += 1
        if count % 12 == 0:
            add(base, "USDC")
        if count % 25 == 0:
            add(base, "EUR")
    return list(specs.values())


def _generated_base(rng: random.Random, taken: set[str]) -> _Base:
    while True:
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        ticker = word[: rng.choice((3, 4, 4, 5))].upper()
        if ticker not in taken and len(ticker) >= 3:
            taken.add(ticker)
            break
    price = math.exp(rng.uniform(math.log(2e-5), math.log(400.0)))
    volatility = rng.uniform(0.06, 0.12)
    # Smaller listings trade a few thousand dollars a minute at most.
    volume = math.exp(rng.uniform(math.log(200.0), math.log(20_000.0))) / price
    return _Base(ticker, f"{word.capitalize()} {rng.choice(SUFFIXES)}", price, volatility, volume)


def _power_of_ten_floor(value: float) -> Decimal:
    return Decimal(1).scaleb(math.floor(math.log10(value)))


def _spec(base: _Base, quote: str, btc_usd: float) -> ProductSpec:
    quote_in_usd = {"USD": 1.0, "USDC": 1.0, "EUR": EUR_USD, "BTC": btc_usd}[quote]
    price = base.usd_price / quote_in_usd
    volume = base.volume * {"USD": 1.0, "USDC": 0.25, "EUR": 0.08, "BTC": 0.05}[quote]
    if base.ticker in STABLECOINS:
        price_increment = Decimal("0.00001")
    else:
        price_increment = _power_of_ten_floor(price * 1e-4)
        if quote != "BTC":
            price_increment = min(price_increment, MAX_FIAT_PRICE_INCREMENT)
    # One base increment is worth about a tenth of a cent or less.
    base_increment = _power_of_ten_floor(0.001 / base.usd_price)
    quote_min = Decimal("0.00001") if quote == "BTC" else Decimal(1)
    quote_max = QUOTE_MAX_BTC if quote == "BTC" else QUOTE_MAX_FIAT
    # The minimum base size is worth at most the minimum notional, so quote_min_size is the binding minimum.
    base_min = max(base_increment, _power_of_ten_floor(float(quote_min) / price))
    base_max = _power_of_ten_floor(float(quote_max) / price)
    initial = Decimal(repr(price)).quantize(price_increment)
    if initial <= 0:
        initial = price_increment
    return ProductSpec(
        product_id=f"{base.ticker}-{quote}",
        base=base.ticker,
        quote=quote,
        base_name=base.name,
        quote_name=QUOTE_NAMES[quote],
        base_increment=base_increment,
        quote_increment=price_increment,
        base_min_size=base_min,
        base_max_size=base_max,
        quote_min_size=quote_min,
        quote_max_size=quote_max,
        status="online",
        trading_disabled=False,
        cancel_only=False,
        limit_only=False,
        post_only=False,
        is_new=False,
        initial_price=initial,
        volatility=base.volatility,
        volume=volume,
    )


def _assign_statuses(rng: random.Random, specs: list[ProductSpec]) -> list[ProductSpec]:
    """A handful of products in each special state; never a top-ten base or a stablecoin. New ones are new listings."""
    protected = STABLECOINS | {row[0] for row in MAJORS[:EUR_RANK]}
    majors = {row[0] for row in MAJORS}
    candidates = [i for i, s in enumerate(specs) if s.base not in protected]
    listings = [i for i in candidates if specs[i].base not in majors]
    per_kind = max(1, min(5, len(specs) // 60))
    new = rng.sample(listings, min(len(listings), per_kind))
    rest = [i for i in candidates if i not in new]
    flagged = rng.sample(rest, min(len(rest), per_kind * len(FLAG_KINDS)))
    out = list(specs)
    for index in new:
        out[index] = replace(out[index], is_new=True)
    for n, index in enumerate(flagged):
        kind = FLAG_KINDS[n % len(FLAG_KINDS)]
        if kind == "offline":
            out[index] = replace(out[index], status="offline", trading_disabled=True)
        else:
            out[index] = replace(out[index], **{kind: True})
    return out
