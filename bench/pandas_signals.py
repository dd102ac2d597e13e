"""The reference for `bench/strategy.py`: the strategy's four signals and its higher-timeframe trend written the
way a typical bot writes them, one product at a time, each a pandas DataFrame of its own candles (oldest first,
only the bars it has), with indicator columns from rolling/shift/diff and the last row read off.

It is here to be measured against, not used: the numpy version in `services/strategy/signals.py` evaluates every
product at once, and the benchmark checks that both give the same direction and strength for every product and
signal (and the same trend) before it times them. The definitions are those of the numpy module's docstrings;
a signal that needs more bars than the product has does not fire, and the trend is 0 below
`trend_bars_per_step * trend_steps` bars.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd

from services.strategy.settings import SignalParams


class Signal(NamedTuple):
    """One signal on one product: direction -1 (sell), 0 (none) or 1 (buy), strength 0..1."""

    direction: int
    strength: float


class ProductSignals(NamedTuple):
    """Every signal on one product, and its trend (-1..1)."""

    signals: dict[str, Signal]
    trend: float


NONE = Signal(0, 0.0)


def strength(beyond: float, scale: float) -> float:
    """0 at the threshold, rising linearly to 1 at twice `scale` past it."""
    value = beyond / (2 * scale)
    return 0.0 if math.isnan(value) else min(max(value, 0.0), 1.0)


def momentum(df: pd.DataFrame, p: SignalParams) -> Signal:
    n, m = p.momentum_bars, p.momentum_volatility_bars
    if len(df) < max(n, m) + 1:
        return NONE
    log_close = np.log(df["close"])
    change = log_close.diff(n)
    volatility = log_close.diff().rolling(m).std(ddof=0)
    z = (change / (volatility * math.sqrt(n))).iloc[-1]
    if not abs(z) >= p.momentum_z:
        return NONE
    return Signal(int(np.sign(z)), strength(abs(z) - p.momentum_z, p.momentum_z))


def breakout(df: pd.DataFrame, p: SignalParams) -> Signal:
    n = p.breakout_bars
    if len(df) < n + 1:
        return NONE
    prior_high = df["high"].rolling(n).max().shift(1)
    prior_low = df["low"].rolling(n).min().shift(1)
    average_range = (df["high"] - df["low"]).rolling(n).mean().shift(1)
    volume_ratio = df["volume"] / df["volume"].rolling(n).mean().shift(1)
    last = df.iloc[-1]
    ratio = volume_ratio.iloc[-1]
    if not ratio >= p.breakout_volume_ratio:
        return NONE
    if last["close"] > prior_high.iloc[-1]:
        direction, beyond = 1, last["close"] - prior_high.iloc[-1]
    elif last["close"] < prior_low.iloc[-1]:
        direction, beyond = -1, prior_low.iloc[-1] - last["close"]
    else:
        return NONE
    distance = strength(beyond, average_range.iloc[-1])
    volume = strength(ratio - p.breakout_volume_ratio, p.breakout_volume_ratio)
    return Signal(direction, (distance + volume) / 2)


def volume_spike(df: pd.DataFrame, p: SignalParams) -> Signal:
    n = p.volume_bars
    if len(df) < n + 1:
        return NONE
    volume = df["volume"]
    mean = volume.rolling(n).mean().shift(1)
    std = volume.rolling(n).std(ddof=0).shift(1)
    if not std.iloc[-1] > 0:  # a flat window says nothing about what a spike is
        return NONE
    z = ((volume - mean) / std).iloc[-1]
    direction = int(np.sign(df["close"].iloc[-1] - df["open"].iloc[-1]))
    if not z >= p.volume_z or direction == 0:
        return NONE
    return Signal(direction, strength(z - p.volume_z, p.volume_z))


def rsi(close: pd.Series, bars: int) -> float:
    """Cutler's RSI (simple averages of gains and losses) of the last bar, 0..100."""
    delta = close.diff()
    gains = delta.clip(lower=0).rolling(bars).mean().iloc[-1]
    losses = (-delta).clip(lower=0).rolling(bars).mean().iloc[-1]
    if losses == 0:
        return 50.0 if gains == 0 else 100.0
    return 100 - 100 / (1 + gains / losses)


def mean_reversion(df: pd.DataFrame, p: SignalParams) -> Signal:
    if len(df) < p.rsi_bars + 1:
        return NONE
    value = rsi(df["close"], p.rsi_bars)
    if value <= p.rsi_low:
        return Signal(1, strength(p.rsi_low - value, p.rsi_low / 2))
    if value >= p.rsi_high:
        return Signal(-1, strength(value - p.rsi_high, (100 - p.rsi_high) / 2))
    return NONE


def trend(df: pd.DataFrame, p: SignalParams) -> float:
    """The last close against the closes of the last `trend_steps` higher-timeframe bars (each
    `trend_bars_per_step` bars, the last one ending on the last bar), in units of twice their spread, -1..1."""
    step, steps = p.trend_bars_per_step, p.trend_steps
    if len(df) < step * steps:
        return 0.0
    closes = df["close"].iloc[-step * steps :].iloc[step - 1 :: step]
    score = (df["close"].iloc[-1] - closes.mean()) / (2 * closes.std(ddof=0))
    return 0.0 if math.isnan(score) else min(max(float(score), -1.0), 1.0)


SIGNALS = {
    "momentum": momentum,
    "breakout": breakout,
    "volume_spike": volume_spike,
    "mean_reversion": mean_reversion,
}


def evaluate(frames: Mapping[str, pd.DataFrame], p: SignalParams) -> dict[str, ProductSignals]:
    """Every signal and the trend, product by product."""
    out = {}
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat window: inf or NaN, as in the numpy version
        for product_id, df in frames.items():
            out[product_id] = ProductSignals({name: signal(df, p) for name, signal in SIGNALS.items()}, trend(df, p))
    return out
