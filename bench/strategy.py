"""One strategy evaluation over 500 products x 300 candles, in CPU time, against the per-product pandas version.

Seeded synthetic candles (a random walk with volatility regimes, trending spells, breakouts on volume and volume
spikes; a few recently listed products with fewer bars) are evaluated by:
1. numpy, every product at once: `evaluate` + `trend` + `find_triggers` + `propose`, what the strategy does each
   cycle (median and p99 of RUNS runs after a warm-up); and the signals and trend alone;
2. `bench/pandas_signals.py`, product by product: the same signals and trend (median of PANDAS_RUNS runs).
First both must agree: the same direction for every product and signal, strengths and trends within 1e-9
(otherwise it prints the differences and exits non-zero). The ratio is the pandas version's CPU time over the
whole numpy evaluation's, in the same run. Targets: one evaluation <= 50 ms, >= 10x the per-product version.

Run with `python -m bench.strategy` (part of `make bench`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from bench import pandas_signals
from bench.measure import percentile
from services.strategy.conviction import Liquidity, Trigger, find_triggers, propose
from services.strategy.settings import StrategyConfig
from services.strategy.signals import SIGNALS, Candles, Fired, evaluate, trend
from shared.proposal import Proposal

PRODUCTS = 500
BARS = 300
SEED = 20261130
WARMUP = 3
RUNS = 30
PANDAS_RUNS = 5
TOLERANCE = 1e-9
TARGET_MS = 50.0
TARGET_RATIO = 10.0
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)
BAR = pd.Timedelta(minutes=5)
# Bars of the recently listed products: each side of what every signal and the trend need.
SHORT_HISTORIES = (10, 13, 14, 15, 16, 24, 25, 26, 48, 49, 50, 100, 143, 144, 145, 200, 299)
VOLATILITY = np.array([0.001, 0.003, 0.01])  # calm, normal and wild regimes, per bar


def regimes(rng: np.random.Generator, shape: tuple[int, int], switch: float, states: int) -> np.ndarray:
    """A state per bar that changes with probability `switch` a bar (to a random state, possibly the same)."""
    draws = rng.integers(0, states, shape)
    changes = rng.random(shape) < switch
    changes[:, 0] = True
    last_change = np.maximum.accumulate(np.where(changes, np.arange(shape[1]), 0), axis=1)
    return np.take_along_axis(draws, last_change, axis=1)


def synthetic_candles(rng: np.random.Generator) -> Candles:
    shape = (PRODUCTS, BARS)
    sigma = VOLATILITY[regimes(rng, shape, 0.02, len(VOLATILITY))]
    drift = (regimes(rng, shape, 0.03, 5) - 2).clip(-1, 1) * 0.3 * sigma  # 3 in 5 spells flat, else trending
    returns = drift + rng.normal(0, 1, shape) * sigma
    breaks = rng.random(shape) < 0.02
    returns += np.where(breaks, rng.choice([-1.0, 1.0], shape) * rng.uniform(3, 6, shape) * sigma, 0.0)
    price = np.exp(rng.uniform(np.log(0.01), np.log(50_000), PRODUCTS))[:, None]
    close = price * np.exp(np.cumsum(returns, axis=1))
    open_ = np.hstack([price, close[:, :-1]]) * np.exp(rng.normal(0, 0.1, shape) * sigma)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.5, shape)) * sigma)
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.5, shape)) * sigma)
    base_volume = np.exp(rng.uniform(np.log(100), np.log(1e7), PRODUCTS))[:, None]
    volume = base_volume * rng.lognormal(0, 0.4, shape) * (sigma / VOLATILITY[1]) ** 0.5
    volume *= np.where(breaks, rng.uniform(3, 8, shape), 1.0)
    volume *= np.where(rng.random(shape) < 0.01, rng.uniform(5, 30, shape), 1.0)
    listed = rng.choice(PRODUCTS, len(SHORT_HISTORIES), replace=False)
    for array in (open_, high, low, close, volume):
        for product, bars in zip(listed, SHORT_HISTORIES, strict=True):
            array[product, : BARS - bars] = np.nan
    products = tuple(f"B{i:03d}-USD" for i in range(PRODUCTS))
    return Candles(products, open_, high, low, close, volume)


def frames(c: Candles) -> dict[str, pd.DataFrame]:
    """Each product's own candles, as a bot would hold them: only the bars it has, oldest first."""
    index = pd.date_range(end=pd.Timestamp(NOW), periods=c.bars, freq=BAR)
    out = {}
    for i, product_id in enumerate(c.products):
        df = pd.DataFrame(
            {"open": c.open[i], "high": c.high[i], "low": c.low[i], "close": c.close[i], "volume": c.volume[i]},
            index=index,
        )
        out[product_id] = df.dropna()
    return out


def liquidity(rng: np.random.Generator, products: tuple[str, ...]) -> dict[str, Liquidity]:
    spreads = rng.lognormal(np.log(8), 1.0, len(products))
    volumes = np.exp(rng.uniform(np.log(1e4), np.log(1e9), len(products)))
    return {p: Liquidity(float(s), float(v)) for p, s, v in zip(products, spreads, volumes, strict=True)}


def cycle(
    c: Candles, liquid: dict[str, Liquidity], config: StrategyConfig
) -> tuple[dict[str, Fired], np.ndarray, list[Trigger], list[Proposal]]:
    """What the strategy does each cycle: every signal and the trend, then triggers and proposals."""
    fired = evaluate(c, config.signals)
    trends = trend(c, config.signals)
    triggers = find_triggers(c.products, fired, trends.tolist(), liquid, config)
    proposals = propose(triggers, threshold=config.threshold, config=config, cycle_id="bench", now=NOW)
    return fired, trends, triggers, proposals


def disagreements(
    c: Candles, fired: dict[str, Fired], trends: np.ndarray, reference: dict[str, pandas_signals.ProductSignals]
) -> tuple[list[str], float]:
    """Every product and signal where the two versions differ; and the largest strength or trend difference."""
    found = []
    worst = 0.0
    for i, product_id in enumerate(c.products):
        bars = int(np.count_nonzero(~np.isnan(c.close[i])))
        expected = reference[product_id]
        for name in SIGNALS:
            direction, strength = int(fired[name].direction[i]), float(fired[name].strength[i])
            other = expected.signals[name]
            worst = max(worst, abs(strength - other.strength))
            if direction != other.direction or abs(strength - other.strength) > TOLERANCE:
                found.append(
                    f"{product_id} ({bars} bars) {name}: numpy {direction:+d} {strength:.12f}, "
                    f"pandas {other.direction:+d} {other.strength:.12f}"
                )
        worst = max(worst, abs(trends[i] - expected.trend))
        if abs(trends[i] - expected.trend) > TOLERANCE:
            found.append(f"{product_id} ({bars} bars) trend: numpy {trends[i]:.12f}, pandas {expected.trend:.12f}")
    return found, worst


def timed(op: Callable[[], object], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds of each run, each ascending."""
    wall, cpu = [], []
    for _ in range(runs):
        wall_start, cpu_start = time.perf_counter(), time.process_time()
        op()
        cpu.append((time.process_time() - cpu_start) * 1000)
        wall.append((time.perf_counter() - wall_start) * 1000)
    return sorted(wall), sorted(cpu)


def main() -> None:
    rng = np.random.default_rng(SEED)
    config = StrategyConfig()
    params = config.signals
    candles = synthetic_candles(rng)
    liquid = liquidity(rng, candles.products)
    per_product = frames(candles)

    fired, trends, triggers, proposals = cycle(candles, liquid, config)
    found, worst = disagreements(candles, fired, trends, pandas_signals.evaluate(per_product, params))
    if found:
        print(f"bench: numpy and pandas differ ({len(found)} differences):", *found, sep="\n  ")
        raise SystemExit(1)
    print(
        f"\nnumpy and pandas agree on all {PRODUCTS} products: the same direction for every signal, strengths and "
        f"trends within {TOLERANCE:g} (largest difference {worst:.1e})"
    )
    counts = ", ".join(
        f"{name} {np.count_nonzero(fired[name].direction == 1)} buy / {np.count_nonzero(fired[name].direction == -1)} "
        f"sell"
        for name in SIGNALS
    )
    print(f"fired: {counts}")
    print(
        f"{len(triggers)} triggers, {len(proposals)} proposals at threshold {config.threshold} "
        f"(profile {config.profile}); {len(SHORT_HISTORIES)} products with fewer than {BARS} bars"
    )

    timed(lambda: cycle(candles, liquid, config), WARMUP)
    rows = [
        (
            "numpy, all products at once: evaluate + trend + find_triggers + propose",
            timed(lambda: cycle(candles, liquid, config), RUNS),
            RUNS,
        ),
        (
            "numpy, all products at once: evaluate + trend",
            timed(lambda: (evaluate(candles, params), trend(candles, params)), RUNS),
            RUNS,
        ),
    ]
    timed(lambda: pandas_signals.evaluate(per_product, params), 1)
    rows.append(
        (
            "pandas, product by product: the same signals + trend",
            timed(lambda: pandas_signals.evaluate(per_product, params), PANDAS_RUNS),
            PANDAS_RUNS,
        )
    )
    numpy_cpu = percentile(rows[0][1][1], 50)
    pandas_cpu = percentile(rows[2][1][1], 50)
    print(f"\none evaluation, {PRODUCTS} products x {BARS} candles ({sys.platform}, one process):\n")
    print("| variant | runs | median ms | p99 ms | CPU ms (median) | ratio vs numpy |\n|---|---:|---:|---:|---:|---:|")
    for variant, (wall, cpu), runs in rows:
        cpu_ms = percentile(cpu, 50)
        print(
            f"| {variant} | {runs} | {percentile(wall, 50):.2f} | {percentile(wall, 99):.2f} | {cpu_ms:.2f} | "
            f"{cpu_ms / numpy_cpu:.2f}x |"
        )
    ratio = pandas_cpu / numpy_cpu
    print(
        f"\nTargets: one evaluation <= {TARGET_MS:g} ms: {numpy_cpu:.2f} ms CPU, "
        f"{'met' if numpy_cpu <= TARGET_MS else 'not met'}; >= {TARGET_RATIO:g}x the per-product version: "
        f"{ratio:.1f}x, {'met' if ratio >= TARGET_RATIO else 'not met'}"
    )


if __name__ == "__main__":
    main()
