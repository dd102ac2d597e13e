"""Seeded market data for the simulator: minute prices and volumes per product, and everything derived from them.

The path is defined from EPOCH (2020-01-01 00:00 UTC) on, at minute resolution:

- Daily anchors (log price at each UTC midnight) are a sum of value-noise layers at 1, 4, 16 and 64 days, drawn
  by hashing (seed, path, layer, knot). Any day's anchor is computed without its predecessors, and prices stay
  around the product's `initial_price` however far the clock runs.
- Each day's 1440 minutes are a Brownian bridge between its two anchors, drawn from
  `numpy.random.default_rng([seed, path, day])`, with a daily volatility regime (calm, normal, stressed days),
  hourly clusters, a US-hours profile, momentum bursts (a trend of 20-150 minutes with heavy volume) and volume
  spikes. So every day is generated on its own, the same whatever is asked first, and the path is continuous.
- USD, USDC and EUR pairs of one base share one path (USDC books are aliases of USD books on Coinbase; EUR is
  a fixed rate away); BTC-quoted pairs have their own.

Candles of every granularity, the 24h statistics and the trades are all taken from these minute candles. The
minute containing `now` is partial: its price moves linearly from the minute's open toward its close by the
fraction of the minute elapsed. The simulator shows `history_days` whole days of candles before the day of `now`
(and nothing before EPOCH).
"""

from __future__ import annotations

import hashlib
import math
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from services.exchange_sim.catalog import STABLECOINS, ProductSpec

EPOCH = 1_577_836_800
DAY = 86_400
MINUTES = 1_440
EPOCH_MINUTE = EPOCH // 60
GRANULARITIES: dict[str, int] = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1_800,
    "ONE_HOUR": 3_600,
    "TWO_HOUR": 7_200,
    "SIX_HOUR": 21_600,
    "ONE_DAY": 86_400,
}
# Value-noise layers of the daily anchors, in days; stablecoins keep only the short ones so they stay pegged.
ANCHOR_LAYERS = (1, 4, 16, 64)
STABLE_LAYERS = (1, 4)
REGIME_LAYER_DAYS = 5
STRESS_DAY_PROBABILITY = 0.06
STRESS_MULTIPLIER = 2.2
BURSTS_PER_DAY = 1.5
SPIKES_PER_DAY = 3.0
SPREAD_FLOOR_BPS = 1.0
# Spread in bps per unit of recent daily volatility: a calm 3% major quotes ~2.5 bps, a stressed alt 10+.
SPREAD_BPS_PER_VOL = 50.0
VOLATILITY_WINDOW_MINUTES = 60
CACHE_DAYS = 2_048
TRADE_STREAM = 7
MASK64 = (1 << 64) - 1
# More activity during US hours (UTC 13-21).
_HOURS = np.arange(MINUTES) / 60.0
SEASON = 0.8 + 0.5 * np.exp(-(((_HOURS - 16.0) / 4.0) ** 2))
_BRIDGE_T = np.arange(MINUTES + 1) / MINUTES


@dataclass(frozen=True, slots=True)
class Candle:
    start: int
    low: float
    high: float
    open: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class Stats24h:
    price: float
    volume_24h: float
    price_percentage_change_24h: float
    high_24h: float
    low_24h: float
    approximate_quote_24h_volume: float
    volume_percentage_change_24h: float


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: str
    price: float
    size: float
    time: float
    side: str


@dataclass(frozen=True, slots=True)
class _Path:
    key: int
    volatility: float
    stable: bool


@dataclass(frozen=True, slots=True)
class _Product:
    spec: ProductSpec
    path: _Path
    key: int
    price_scale: float
    volume_scale: float


@dataclass(frozen=True, slots=True)
class _Day:
    """One UTC day of a path: 1441 boundary prices and per-minute wicks and volumes, relative to the product."""

    points: np.ndarray
    high: np.ndarray
    low: np.ndarray
    volume: np.ndarray


@dataclass(frozen=True, slots=True)
class _Minutes:
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class Market:
    """Prices, candles, books and trades of every catalog product, a pure function of (seed, product, time)."""

    def __init__(self, catalog: list[ProductSpec], *, seed: int, history_days: int = 30):
        self._seed = seed & MASK64
        self._history_days = history_days
        paths: dict[str, _Path] = {}
        self._products: dict[str, _Product] = {}
        for spec in catalog:
            name = spec.base if spec.quote in ("USD", "USDC", "EUR") else spec.product_id
            path = paths.setdefault(name, _Path(_key(name), spec.volatility, spec.base in STABLECOINS))
            self._products[spec.product_id] = _Product(
                spec, path, _key(spec.product_id), float(spec.initial_price), spec.volume
            )
        self._cache: OrderedDict[tuple[int, int], _Day] = OrderedDict()
        self._cache_days = max(CACHE_DAYS, 3 * len(paths))
        self._anchors: dict[tuple[int, int], float] = {}

    def candles(self, product_id: str, *, start: int, end: int, granularity: str, now: float) -> list[Candle]:
        """Buckets starting in [start, end) and not after `now`, newest first; the one holding `now` is partial."""
        product = self._products[product_id]
        step = GRANULARITIES[granularity]
        visible = self._first_visible(now)
        first = -(-max(start, visible) // step) * step
        last = (min(end - 1, math.floor(now)) // step) * step
        if last < first:
            return []
        minute_end = min(last + step, (math.floor(now) // 60 + 1) * 60)
        m = self._minutes(product, first // 60, minute_end // 60, now)
        per = step // 60
        idx = np.arange(0, len(m.open), per)
        closes = m.close[np.minimum(idx + per, len(m.close)) - 1]
        highs = np.maximum.reduceat(m.high, idx)
        lows = np.minimum.reduceat(m.low, idx)
        volumes = np.add.reduceat(m.volume, idx)
        out = [
            Candle(first + i * step, float(lo), float(hi), float(op), float(cl), float(vo))
            for i, (lo, hi, op, cl, vo) in enumerate(
                zip(lows.tolist(), highs.tolist(), m.open[idx].tolist(), closes.tolist(), volumes.tolist(), strict=True)
            )
        ]
        out.reverse()
        return out

    def price(self, product_id: str, now: float) -> float:
        """Last price at `now` (before EPOCH: the price at EPOCH): the close of the partial current candle."""
        product = self._products[product_id]
        now = max(now, float(EPOCH))
        minute = math.floor(now) // 60
        day, offset = divmod(minute - EPOCH_MINUTE, MINUTES)
        points = self._day(product.path, day).points
        fraction = (now - minute * 60) / 60.0
        open_ = float(points[offset])
        return (open_ + (float(points[offset + 1]) - open_) * fraction) * product.price_scale

    def volatility(self, product_id: str, now: float) -> float:
        """Realized daily volatility of the last hour of complete minutes (the product's typical one near EPOCH)."""
        product = self._products[product_id]
        minute = math.floor(max(now, float(EPOCH))) // 60
        first = max(EPOCH_MINUTE, minute - VOLATILITY_WINDOW_MINUTES)
        if minute - first < 2:
            return product.path.volatility
        m = self._minutes(product, first, minute, now)
        returns = np.log(m.close / m.open)
        return float(np.sqrt(np.mean(returns * returns) * MINUTES))

    def best_bid_ask(self, product_id: str, now: float) -> tuple[float, float]:
        """Bid and ask around the last price; the spread in bps widens with recent volatility."""
        mid = self.price(product_id, now)
        bps = SPREAD_FLOOR_BPS + SPREAD_BPS_PER_VOL * self.volatility(product_id, now)
        half = mid * bps / 20_000.0
        return mid - half, mid + half

    def stats_24h(self, product_id: str, now: float) -> Stats24h:
        """Figures of the last 1440 minute candles (the current one partial), and the volume change against the
        1440 before them."""
        product = self._products[product_id]
        now = max(now, float(EPOCH))
        minute = math.floor(now) // 60
        first = max(EPOCH_MINUTE, minute - 2 * MINUTES + 1)
        m = self._minutes(product, first, minute + 1, now)
        split = max(0, len(m.open) - MINUTES)
        volume = float(m.volume[split:].sum())
        previous = float(m.volume[:split].sum())
        price = float(m.close[-1])
        quote_volume = float(np.dot(m.volume[split:], (m.open[split:] + m.close[split:]) / 2.0))
        return Stats24h(
            price=price,
            volume_24h=volume,
            price_percentage_change_24h=(price / float(m.open[split]) - 1.0) * 100.0,
            high_24h=float(m.high[split:].max()),
            low_24h=float(m.low[split:].min()),
            approximate_quote_24h_volume=quote_volume,
            volume_percentage_change_24h=(volume / previous - 1.0) * 100.0 if previous > 0 else 0.0,
        )

    def trades(self, product_id: str, now: float, limit: int) -> list[Trade]:
        """The last `limit` trades up to `now` (at most a day back), newest first; each within its minute's range."""
        product = self._products[product_id]
        minute = math.floor(now) // 60
        stop = max(EPOCH_MINUTE, minute - MINUTES)
        out: list[Trade] = []
        while len(out) < limit and minute >= stop:
            out.extend(self._minute_trades(product, minute, now))
            minute -= 1
        return out[:limit]

    def _first_visible(self, now: float) -> int:
        return max(EPOCH, (math.floor(now) // DAY - self._history_days) * DAY)

    def _minute_trades(self, product: _Product, minute: int, now: float) -> list[Trade]:
        index = minute - EPOCH_MINUTE
        day, offset = divmod(index, MINUTES)
        data = self._day(product.path, day)
        open_, close = float(data.points[offset]), float(data.points[offset + 1])
        high, low, volume = float(data.high[offset]), float(data.low[offset]), float(data.volume[offset])
        rng = np.random.default_rng([self._seed, product.key, index, TRADE_STREAM])
        count = 1 + int(rng.poisson(min(30.0, 4.0 * volume)))
        seconds = np.sort(rng.uniform(0.0, 60.0, count))
        path = open_ + (close - open_) * seconds / 60.0
        prices = np.clip(path + rng.standard_normal(count) * (high - low) / 4.0, low, high) * product.price_scale
        sizes = rng.dirichlet(np.ones(count)) * volume * product.volume_scale
        buy_probability = 0.5 + 0.2 * float(np.sign(close - open_))
        buys = rng.random(count) < buy_probability
        trades = [
            Trade(
                trade_id=str(index * 100 + j),
                price=float(prices[j]),
                size=float(sizes[j]),
                time=minute * 60 + float(seconds[j]),
                side="BUY" if buys[j] else "SELL",
            )
            for j in range(count)
            if minute * 60 + float(seconds[j]) <= now
        ]
        trades.reverse()
        return trades

    def _minutes(self, product: _Product, first: int, end: int, now: float) -> _Minutes:
        """Minute candles of Unix minutes [first, end), scaled to the product; the minute holding `now` partial."""
        parts: list[tuple[np.ndarray, ...]] = []
        index = first - EPOCH_MINUTE
        stop = end - EPOCH_MINUTE
        while index < stop:
            day, offset = divmod(index, MINUTES)
            upto = min(MINUTES, offset + stop - index)
            data = self._day(product.path, day)
            parts.append(
                (
                    data.points[offset:upto],
                    data.high[offset:upto],
                    data.low[offset:upto],
                    data.points[offset + 1 : upto + 1],
                    data.volume[offset:upto],
                )
            )
            index += upto - offset
        open_, high, low, close, volume = (np.concatenate(column) for column in zip(*parts, strict=True))
        current = math.floor(now) // 60
        if end - 1 == current:
            fraction = (now - current * 60) / 60.0
            close[-1] = open_[-1] + (close[-1] - open_[-1]) * fraction
            high[-1] = max(open_[-1], close[-1])
            low[-1] = min(open_[-1], close[-1])
            volume[-1] = volume[-1] * fraction
        scale = product.price_scale
        return _Minutes(open_ * scale, high * scale, low * scale, close * scale, volume * product.volume_scale)

    def _day(self, path: _Path, day: int) -> _Day:
        cached = self._cache.get((path.key, day))
        if cached is not None:
            self._cache.move_to_end((path.key, day))
            return cached
        data = self._generate_day(path, day)
        self._cache[(path.key, day)] = data
        if len(self._cache) > self._cache_days:
            self._cache.popitem(last=False)
        return data

    def _generate_day(self, path: _Path, day: int) -> _Day:
        rng = np.random.default_rng([self._seed, path.key, day])
        regime = self._regime(path, day)
        hourly = np.repeat(np.exp(0.3 * rng.standard_normal(24)), 60)
        sigma = path.volatility / math.sqrt(MINUTES) * regime * hourly * SEASON
        drift = np.zeros(MINUTES)
        activity = np.ones(MINUTES)
        for _ in range(int(rng.poisson(BURSTS_PER_DAY))):
            start = int(rng.integers(0, MINUTES - 20))
            stop = min(MINUTES, start + int(rng.integers(20, 150)))
            move = (1.0 if rng.random() < 0.5 else -1.0) * float(rng.uniform(0.5, 1.5)) * path.volatility * regime
            drift[start:stop] += move / (stop - start)
            activity[start:stop] *= rng.uniform(2.0, 5.0)
        spikes = int(rng.poisson(SPIKES_PER_DAY))
        activity[rng.integers(0, MINUTES, spikes)] *= rng.uniform(3.0, 10.0, spikes)
        shocks = rng.standard_normal(MINUTES)
        steps = sigma * shocks + drift
        walk = np.concatenate(([0.0], np.cumsum(steps)))
        a0, a1 = self._anchor(path, day), self._anchor(path, day + 1)
        log_points = a0 + (a1 - a0) * _BRIDGE_T + walk - _BRIDGE_T * walk[-1]
        log_points[0], log_points[-1] = a0, a1
        points = np.exp(log_points)
        opens, closes = points[:-1], points[1:]
        wick = 0.6 * sigma
        high = np.maximum(opens, closes) * np.exp(wick * np.abs(rng.standard_normal(MINUTES)))
        low = np.minimum(opens, closes) * np.exp(-wick * np.abs(rng.standard_normal(MINUTES)))
        noise = np.exp(0.5 * rng.standard_normal(MINUTES) - 0.125)
        # Volume follows activity and the size of the move; the factors keep a normal day's mean near 1.
        volume = regime**0.7 * np.sqrt(hourly) * SEASON * noise * activity * (1.0 + 0.5 * np.abs(shocks)) / 1.4
        return _Day(points, high, low, volume)

    def _anchor(self, path: _Path, day: int) -> float:
        """Log price at the start of `day`, relative to the product's initial price."""
        cached = self._anchors.get((path.key, day))
        if cached is not None:
            return cached
        layers = STABLE_LAYERS if path.stable else ANCHOR_LAYERS
        anchor = sum(
            path.volatility * math.sqrt(span / 2.0) * self._noise(path.key, 1 + span, day, span) for span in layers
        )
        # Each midnight is both the close of one day and the open of the next: keep it for the neighbour.
        if len(self._anchors) >= 2 * self._cache_days:
            self._anchors.clear()
        self._anchors[(path.key, day)] = anchor
        return anchor

    def _regime(self, path: _Path, day: int) -> float:
        """Volatility multiplier of a day: slow clusters, daily jitter and the occasional stressed day."""
        slow = self._noise(path.key, 1_000, day, REGIME_LAYER_DAYS)
        level = math.exp(0.35 * slow + 0.2 * _normal(self._seed, path.key, 1_001, day))
        stressed = _uniform(self._seed, path.key, 1_002, day) < STRESS_DAY_PROBABILITY
        return level * (STRESS_MULTIPLIER if stressed else 1.0)

    def _noise(self, key: int, layer: int, day: int, span: int) -> float:
        """Value noise: standard normals at every `span` days, linearly interpolated."""
        knot, within = divmod(day, span)
        left = _normal(self._seed, key, layer, knot)
        if within == 0:
            return left
        right = _normal(self._seed, key, layer, knot + 1)
        return left + (right - left) * within / span


def _key(name: str) -> int:
    return zlib.crc32(name.encode())


def _hash(*parts: int) -> tuple[int, int]:
    digest = hashlib.blake2b(struct.pack(f"<{len(parts)}Q", *(p & MASK64 for p in parts)), digest_size=16).digest()
    return struct.unpack("<QQ", digest)


def _uniform(*parts: int) -> float:
    return (_hash(*parts)[0] + 0.5) / 2.0**64


def _normal(*parts: int) -> float:
    a, b = _hash(*parts)
    return math.sqrt(-2.0 * math.log((a + 0.5) / 2.0**64)) * math.cos(2.0 * math.pi * b / 2.0**64)
