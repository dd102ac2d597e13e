"""The simulator's catalog and seeded market: determinism, candle consistency, no look-ahead, spreads."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.exchange_sim.catalog import REQUIRED, STABLECOINS, ProductSpec, build_catalog
from services.exchange_sim.market import DAY, EPOCH, GRANULARITIES, Candle, Market

SEED = 42
NOW = 1_795_000_000.5  # 2026-11-18, mid-minute
HOUR = 3_600


@pytest.fixture(scope="module")
def catalog() -> list[ProductSpec]:
    return build_catalog(SEED)


@pytest.fixture(scope="module")
def market(catalog: list[ProductSpec]) -> Market:
    return Market(catalog, seed=SEED, history_days=30)


def _aggregate(minutes: list[Candle], step: int) -> list[Candle]:
    """Buckets of `step` seconds built from minute candles (newest first in, newest first out)."""
    groups: dict[int, list[Candle]] = {}
    for candle in reversed(minutes):
        groups.setdefault(candle.start // step * step, []).append(candle)
    return [
        Candle(
            start=start,
            low=min(c.low for c in group),
            high=max(c.high for c in group),
            open=group[0].open,
            close=group[-1].close,
            volume=sum(c.volume for c in group),
        )
        for start, group in sorted(groups.items(), reverse=True)
    ]


def _is_power_of_ten(value: Decimal) -> bool:
    return value > 0 and value == Decimal(1).scaleb(value.adjusted())


def test_same_seed_gives_the_same_catalog_and_another_seed_another() -> None:
    assert build_catalog(7) == build_catalog(7)
    assert build_catalog(7) != build_catalog(8)


def test_catalog_has_the_required_tradable_products_with_unique_ids(catalog: list[ProductSpec]) -> None:
    assert len(catalog) == 300
    ids = [p.product_id for p in catalog]
    assert len(set(ids)) == len(ids)
    by_id = {p.product_id: p for p in catalog}
    for product_id in REQUIRED:
        product = by_id[product_id]
        assert product.status == "online"
        assert not (product.trading_disabled or product.cancel_only or product.limit_only or product.post_only)
    assert Decimal(50_000) < by_id["BTC-USD"].initial_price < Decimal(200_000)
    assert by_id["BTC-USD"].quote_increment == Decimal("0.01")
    assert {p.quote for p in catalog} == {"USD", "USDC", "EUR", "BTC"}
    quotes = [p.quote for p in catalog]
    assert max(set(quotes), key=quotes.count) == "USD"


def test_catalog_has_a_handful_of_each_special_status(catalog: list[ProductSpec]) -> None:
    counts = {
        "trading_disabled": sum(p.trading_disabled and p.status == "online" for p in catalog),
        "cancel_only": sum(p.cancel_only for p in catalog),
        "limit_only": sum(p.limit_only for p in catalog),
        "post_only": sum(p.post_only for p in catalog),
        "offline": sum(p.status == "offline" for p in catalog),
        "new": sum(p.is_new for p in catalog),
    }
    assert all(2 <= n <= 10 for n in counts.values()), counts


def test_stablecoins_trade_near_one(catalog: list[ProductSpec], market: Market) -> None:
    stables = [p for p in catalog if p.base in STABLECOINS and p.quote in ("USD", "USDC")]
    assert {"USDT-USD", "DAI-USD", "PYUSD-USD"} <= {p.product_id for p in stables}
    for product in stables:
        for t in (NOW, NOW - 10 * DAY, NOW + 200 * DAY):
            assert abs(market.price(product.product_id, t) - 1.0) < 0.01
        bid, ask = market.best_bid_ask(product.product_id, NOW)
        assert 0.5 < (ask - bid) / ((ask + bid) / 2) * 1e4 < 2.0


@pytest.mark.parametrize("size", [20, 300, 1000])
def test_increments_are_powers_of_ten_and_minimums_consistent(size: int) -> None:
    catalog = build_catalog(SEED, size)
    assert len(catalog) == size
    for p in catalog:
        for value in (p.base_increment, p.quote_increment, p.base_min_size, p.base_max_size):
            assert isinstance(value, Decimal)
            assert _is_power_of_ten(value), (p.product_id, value)
        assert p.initial_price > 0
        assert p.initial_price % p.quote_increment == 0
        assert p.quote_increment <= p.initial_price * Decimal("0.001")
        assert p.base_min_size >= p.base_increment
        assert p.base_min_size * p.initial_price <= p.quote_min_size
        usd_per_quote = {"USD": 1, "USDC": 1, "EUR": Decimal("1.2"), "BTC": Decimal(100_000)}[p.quote]
        assert p.base_increment * p.initial_price * usd_per_quote < Decimal("0.05")
        assert p.quote_min_size == (Decimal("0.00001") if p.quote == "BTC" else Decimal(1))


def test_same_seed_gives_the_same_candles_whatever_the_query_order(catalog: list[ProductSpec]) -> None:
    start, end = int(NOW) // HOUR * HOUR - 48 * HOUR, int(NOW) // HOUR * HOUR
    fresh = Market(catalog, seed=SEED)
    hours = fresh.candles("ETH-USD", start=start, end=end, granularity="ONE_HOUR", now=NOW)
    other = Market(catalog, seed=SEED)
    other.stats_24h("BTC-USD", NOW + 5 * DAY)
    other.candles("ETH-USD", start=start + 7 * HOUR, end=end, granularity="ONE_MINUTE", now=NOW)
    assert other.candles("ETH-USD", start=start, end=end, granularity="ONE_HOUR", now=NOW) == hours
    different = Market(catalog, seed=SEED + 1)
    assert different.candles("ETH-USD", start=start, end=end, granularity="ONE_HOUR", now=NOW) != hours


@pytest.mark.parametrize("granularity", ["FIVE_MINUTE", "FIFTEEN_MINUTE", "ONE_HOUR", "SIX_HOUR", "ONE_DAY"])
def test_coarse_candles_are_aggregates_of_minute_candles(market: Market, granularity: str) -> None:
    step = GRANULARITIES[granularity]
    end = int(NOW) + 1
    start = end - 2 * DAY
    minutes = market.candles("SOL-USD", start=start // step * step, end=end, granularity="ONE_MINUTE", now=NOW)
    coarse = market.candles("SOL-USD", start=start, end=end, granularity=granularity, now=NOW)
    expected = [c for c in _aggregate(minutes, step) if c.start >= start]
    assert [c.start for c in coarse] == [c.start for c in expected]
    for got, want in zip(coarse, expected, strict=True):
        assert (got.open, got.close, got.high, got.low) == (want.open, want.close, want.high, want.low)
        assert got.volume == pytest.approx(want.volume, rel=1e-9)


@pytest.mark.parametrize("granularity", list(GRANULARITIES))
def test_candles_are_newest_first_aligned_and_not_after_now(market: Market, granularity: str) -> None:
    step = GRANULARITIES[granularity]
    start, end = int(NOW) - 200 * step + 17, int(NOW) + 50 * step
    candles = market.candles("BTC-USD", start=start, end=end, granularity=granularity, now=NOW)
    starts = [c.start for c in candles]
    assert starts == sorted(starts, reverse=True)
    assert all(s % step == 0 and start <= s < end and s <= NOW for s in starts)
    assert starts[0] == int(NOW) // step * step
    assert all(0 < c.low <= min(c.open, c.close) <= max(c.open, c.close) <= c.high for c in candles)
    assert all(c.volume >= 0 for c in candles)


def test_no_candles_before_epoch_or_before_the_history_window(catalog: list[ProductSpec]) -> None:
    market = Market(catalog, seed=SEED, history_days=3)
    assert market.candles("BTC-USD", start=EPOCH - DAY, end=EPOCH, granularity="ONE_HOUR", now=EPOCH + 10) == []
    days = market.candles("BTC-USD", start=int(NOW) - 10 * DAY, end=int(NOW), granularity="ONE_DAY", now=NOW)
    assert [c.start for c in days][-1] == (int(NOW) // DAY - 3) * DAY


@settings(max_examples=25, deadline=None)
@given(offset=st.floats(min_value=0, max_value=3 * DAY), later=st.floats(min_value=0, max_value=2 * DAY))
def test_the_partial_candle_never_reveals_the_future(market: Market, offset: float, later: float) -> None:
    now = NOW + offset
    start = int(now) - 3 * HOUR
    early = market.candles("SOL-USD", start=start, end=int(now) + HOUR, granularity="ONE_MINUTE", now=now)
    late = market.candles("SOL-USD", start=start, end=int(now) + HOUR, granularity="ONE_MINUTE", now=now + later)
    complete = {c.start: c for c in early if c.start + 60 <= now}
    assert complete and all(late_c == complete[late_c.start] for late_c in late if late_c.start in complete)
    assert early[0].close == pytest.approx(market.price("SOL-USD", now), rel=1e-12)
    hour = market.candles("SOL-USD", start=start, end=int(now) + 1, granularity="ONE_HOUR", now=now)
    assert hour[0].close == pytest.approx(market.price("SOL-USD", now), rel=1e-12)
    assert hour[0].high <= max(c.high for c in early if c.start >= hour[0].start)


def test_price_is_continuous_across_a_minute_and_a_day(market: Market) -> None:
    midnight = float(int(NOW) // DAY * DAY)
    assert market.price("ETH-USD", midnight - 1e-6) == pytest.approx(market.price("ETH-USD", midnight), rel=1e-9)
    assert market.price("ETH-USD", midnight + 60 - 1e-6) == pytest.approx(
        market.price("ETH-USD", midnight + 60), rel=1e-9
    )


def test_stats_24h_match_the_minute_candles_of_the_last_day(market: Market) -> None:
    first = (int(NOW) // 60 - 1439) * 60
    minutes = market.candles("BTC-USD", start=first, end=int(NOW) + 1, granularity="ONE_MINUTE", now=NOW)
    stats = market.stats_24h("BTC-USD", NOW)
    assert len(minutes) == 1440
    assert stats.price == minutes[0].close == market.price("BTC-USD", NOW)
    assert stats.high_24h == max(c.high for c in minutes)
    assert stats.low_24h == min(c.low for c in minutes)
    assert stats.volume_24h == pytest.approx(sum(c.volume for c in minutes), rel=1e-9)
    assert stats.price_percentage_change_24h == pytest.approx((stats.price / minutes[-1].open - 1) * 100)
    previous = market.candles("BTC-USD", start=first - DAY, end=first, granularity="ONE_MINUTE", now=NOW)
    change = (stats.volume_24h / sum(c.volume for c in previous) - 1) * 100
    assert stats.volume_percentage_change_24h == pytest.approx(change, rel=1e-6)
    assert stats.low_24h * stats.volume_24h <= stats.approximate_quote_24h_volume
    assert stats.approximate_quote_24h_volume <= stats.high_24h * stats.volume_24h


def test_spread_is_positive_and_wider_when_volatile(market: Market) -> None:
    times = [NOW + k * 1_800 for k in range(5 * 48)]
    vols = {t: market.volatility("DOGE-USD", t) for t in times}
    calm, wild = min(times, key=vols.__getitem__), max(times, key=vols.__getitem__)
    assert vols[wild] > 2 * vols[calm]

    def spread_bps(t: float) -> float:
        bid, ask = market.best_bid_ask("DOGE-USD", t)
        assert 0 < bid < ask
        return (ask - bid) / ((ask + bid) / 2) * 1e4

    assert spread_bps(wild) > spread_bps(calm) > 0


def test_trades_are_newest_first_and_inside_their_minute(market: Market) -> None:
    trades = market.trades("ETH-USD", NOW, 100)
    assert len(trades) == 100
    assert trades == market.trades("ETH-USD", NOW, 100)
    times = [t.time for t in trades]
    assert times == sorted(times, reverse=True) and times[0] <= NOW
    assert len({t.trade_id for t in trades}) == 100
    minutes = market.candles("ETH-USD", start=int(times[-1]) - 60, end=int(NOW) + 1, granularity="ONE_MINUTE", now=NOW)
    full = {
        c.start: c
        for c in market.candles(
            "ETH-USD", start=minutes[-1].start, end=int(NOW) + 60, granularity="ONE_MINUTE", now=NOW + 60
        )
    }
    for trade in trades:
        candle = full[int(trade.time) // 60 * 60]
        assert candle.low <= trade.price <= candle.high
        assert trade.size > 0 and trade.side in ("BUY", "SELL")


def test_momentum_bursts_show_up_as_large_hourly_moves(market: Market) -> None:
    hours = market.candles("SOL-USD", start=int(NOW) - 20 * DAY, end=int(NOW), granularity="ONE_HOUR", now=NOW)
    moves = sorted(abs(c.close / c.open - 1) for c in hours)
    median = moves[len(moves) // 2]
    assert moves[-1] > 5 * median


def test_prices_stay_positive_far_from_the_epoch(market: Market) -> None:
    for years in (0, 1, 5, 20):
        t = EPOCH + years * 365 * DAY + 12_345.6
        assert market.price("PEPE-USD", t) > 0
        assert market.stats_24h("PEPE-USD", t).low_24h > 0


def test_stats_for_every_product_of_a_300_product_catalog(catalog: list[ProductSpec]) -> None:
    market = Market(catalog, seed=SEED)
    stats = [market.stats_24h(p.product_id, NOW) for p in catalog]
    assert all(s.price > 0 and s.volume_24h > 0 and s.low_24h <= s.price <= s.high_24h for s in stats)
