"""The signals, vectorised with numpy over every product at once: each fires a trigger with a direction and a
strength (0..1: 0 at the signal's own threshold, 1 at twice as far past it).

Candles are arrays of shape (products, bars), oldest bar first; a product with fewer bars than the others has
NaN in its first columns, and a signal that needs bars it does not have does not fire for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from services.strategy.settings import SignalParams

Floats = NDArray[np.float64]
SIGNALS = ("momentum", "breakout", "volume_spike", "mean_reversion")


@dataclass(frozen=True)
class Candles:
    """Aligned candles of many products: each array is (products, bars), oldest first."""

    products: tuple[str, ...]
    open: Floats
    high: Floats
    low: Floats
    close: Floats
    volume: Floats

    @property
    def bars(self) -> int:
        return self.close.shape[1]


@dataclass(frozen=True)
class Fired:
    """One signal over every product: direction -1 (sell), 0 (none) or 1 (buy), strength 0..1, raw score."""

    direction: NDArray[np.int8]
    strength: Floats
    score: Floats


def _strength(beyond: Floats, scale: float | Floats) -> Floats:
    """0 at the threshold, rising linearly to 1 at twice `scale` past it (a signal's threshold is its scale)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(beyond / (2 * scale), 0.0, 1.0)


def _fire(direction: Floats, strength: Floats, score: Floats) -> Fired:
    direction = np.nan_to_num(direction).astype(np.int8)
    return Fired(direction, np.where(direction != 0, np.nan_to_num(strength), 0.0), np.nan_to_num(score))


def momentum(c: Candles, p: SignalParams) -> Fired:
    """Rate of change over `momentum_bars` against its own volatility (a z-score); fires past `momentum_z`."""
    n, m = p.momentum_bars, p.momentum_volatility_bars
    if c.bars < max(n, m) + 1:
        return _nothing(c)
    log_close = np.log(c.close)
    change = log_close[:, -1] - log_close[:, -1 - n]
    returns = np.diff(log_close[:, -m - 1 :], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = change / (np.std(returns, axis=1) * np.sqrt(n))
    fired = np.abs(z) >= p.momentum_z
    return _fire(np.where(fired, np.sign(z), 0), _strength(np.abs(z) - p.momentum_z, p.momentum_z), z)


def breakout(c: Candles, p: SignalParams) -> Fired:
    """The close beyond the high (low) of the `breakout_bars` before it, on `breakout_volume_ratio` times their
    average volume; the strength grows with the distance past the level (in average ranges) and the volume."""
    n = p.breakout_bars
    if c.bars < n + 1:
        return _nothing(c)
    high = np.max(c.high[:, -n - 1 : -1], axis=1)
    low = np.min(c.low[:, -n - 1 : -1], axis=1)
    average_range = np.mean(c.high[:, -n - 1 : -1] - c.low[:, -n - 1 : -1], axis=1)
    average_volume = np.mean(c.volume[:, -n - 1 : -1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # no volume before: nothing to confirm a breakout against
        volume_ratio = np.where(average_volume > 0, c.volume[:, -1] / average_volume, np.nan)
    close = c.close[:, -1]
    confirmed = volume_ratio >= p.breakout_volume_ratio
    up = (close > high) & confirmed
    down = (close < low) & confirmed
    beyond = np.where(up, close - high, np.where(down, low - close, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = _strength(beyond, average_range)
        volume = _strength(volume_ratio - p.breakout_volume_ratio, p.breakout_volume_ratio)
    return _fire(np.where(up, 1, np.where(down, -1, 0)), (distance + volume) / 2, beyond)


def volume_spike(c: Candles, p: SignalParams) -> Fired:
    """The last bar's volume as a z-score against the `volume_bars` before it; fires past `volume_z`, in the
    direction of the bar."""
    n = p.volume_bars
    if c.bars < n + 1:
        return _nothing(c)
    before = c.volume[:, -n - 1 : -1]
    spread = np.std(before, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # a flat window (an illiquid product's zero volumes) says nothing about what a spike is
        z = np.where(spread > 0, (c.volume[:, -1] - np.mean(before, axis=1)) / spread, np.nan)
    direction = np.sign(c.close[:, -1] - c.open[:, -1])
    fired = (z >= p.volume_z) & (direction != 0)
    return _fire(np.where(fired, direction, 0), _strength(z - p.volume_z, p.volume_z), z)


def rsi(close: Floats, bars: int) -> Floats:
    """Cutler's RSI of the last `bars` changes (simple averages of gains and losses), 0..100."""
    changes = np.diff(close[:, -bars - 1 :], axis=1)
    gains = np.mean(np.clip(changes, 0, None), axis=1)
    losses = np.mean(np.clip(-changes, 0, None), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(losses == 0, np.where(gains == 0, 50.0, 100.0), 100 - 100 / (1 + gains / losses))


def mean_reversion(c: Candles, p: SignalParams) -> Fired:
    """RSI extremes: at or below `rsi_low` a buy, at or above `rsi_high` a sell."""
    if c.bars < p.rsi_bars + 1:
        return _nothing(c)
    value = rsi(c.close, p.rsi_bars)
    buy, sell = value <= p.rsi_low, value >= p.rsi_high
    beyond = np.where(buy, p.rsi_low - value, np.where(sell, value - p.rsi_high, 0.0))
    # full strength at the end of the scale: an RSI of 0 for a buy, 100 for a sell
    room = np.where(buy, p.rsi_low, 100 - p.rsi_high) / 2
    return _fire(np.where(buy, 1, np.where(sell, -1, 0)), _strength(beyond, room), value)


def trend(c: Candles, p: SignalParams) -> Floats:
    """The higher-timeframe trend, -1..1: the last close against the average of the last `trend_steps` closes of
    bars `trend_bars_per_step` times longer, in units of their spread (0 where there are too few bars)."""
    step, steps = p.trend_bars_per_step, p.trend_steps
    if c.bars < step * steps:
        return np.zeros(len(c.products))
    window = c.close[:, -step * steps :]
    closes = window[:, step - 1 :: step]
    with np.errstate(invalid="ignore", divide="ignore"):
        score = (c.close[:, -1] - np.mean(closes, axis=1)) / (2 * np.std(closes, axis=1))
    # a product whose history does not reach back over the whole window has no trend yet
    score = np.where(np.isnan(window[:, 0]), 0.0, score)
    return np.clip(np.nan_to_num(score), -1.0, 1.0)


def evaluate(c: Candles, p: SignalParams) -> dict[str, Fired]:
    """Every signal over every product."""
    return {
        "momentum": momentum(c, p),
        "breakout": breakout(c, p),
        "volume_spike": volume_spike(c, p),
        "mean_reversion": mean_reversion(c, p),
    }


def _nothing(c: Candles) -> Fired:
    zeros = np.zeros(len(c.products))
    return Fired(zeros.astype(np.int8), zeros, zeros)
