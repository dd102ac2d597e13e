"""Signals and conviction on synthetic series with known answers."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from services.strategy.conviction import Liquidity, Trigger, conviction, find_triggers, propose, ratio, sweep
from services.strategy.policy import adjusted
from services.strategy.settings import ConvictionWeights, DynamicConviction, SignalParams, StrategyConfig
from services.strategy.signals import Candles, evaluate, rsi, trend

BARS = 300
PARAMS = SignalParams()
CONFIG = StrategyConfig()
NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def candles(closes: list[np.ndarray], volumes: list[np.ndarray] | None = None) -> Candles:
    close = np.vstack(closes).astype(float)
    open_ = np.hstack([close[:, :1], close[:, :-1]])
    high = np.maximum(open_, close) * 1.001
    low = np.minimum(open_, close) * 0.999
    volume = np.vstack(volumes) if volumes is not None else np.full_like(close, 100.0)
    return Candles(tuple(f"P{i}-USD" for i in range(len(closes))), open_, high, low, close, volume)


def wiggle(seed: int, scale: float = 0.001) -> np.ndarray:
    """A calm random walk around 100."""
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, scale, BARS)))


def test_a_flat_series_fires_nothing() -> None:
    fired = evaluate(candles([np.full(BARS, 100.0)]), PARAMS)
    assert all(int(signal.direction[0]) == 0 for signal in fired.values())


def noisy_volume(seed: int) -> np.ndarray:
    return 100 + np.random.default_rng(seed).normal(0, 5, BARS)


def test_a_clean_breakout_on_volume_fires_a_buy() -> None:
    close = wiggle(1)
    close[-1] = close[-25:-1].max() * 1.02
    volume = noisy_volume(1)
    volume[-1] = 400.0
    fired = evaluate(candles([close], [volume]), PARAMS)
    assert int(fired["breakout"].direction[0]) == 1 and fired["breakout"].strength[0] > 0.5
    assert int(fired["volume_spike"].direction[0]) == 1
    quiet = evaluate(candles([close]), PARAMS)  # the same move without the volume: no breakout
    assert int(quiet["breakout"].direction[0]) == 0


def test_a_sharp_fall_fires_momentum_down_and_rsi_oversold() -> None:
    close = wiggle(2)
    close[-12:] = close[-13] * np.linspace(0.995, 0.94, 12)
    fired = evaluate(candles([close]), PARAMS)
    assert int(fired["momentum"].direction[0]) == -1
    assert int(fired["mean_reversion"].direction[0]) == 1  # oversold: a buy
    assert rsi(candles([close]).close, 14)[0] < PARAMS.rsi_low


def test_signals_are_computed_for_every_product_at_once() -> None:
    rising = wiggle(3)
    rising[-12:] = rising[-13] * np.linspace(1.005, 1.06, 12)
    fired = evaluate(candles([wiggle(4), rising, np.full(BARS, 50.0)]), PARAMS)
    assert list(fired["momentum"].direction) == [0, 1, 0]
    assert trend(candles([rising]), PARAMS)[0] > 0


def test_too_few_bars_fire_nothing() -> None:
    fired = evaluate(candles([wiggle(5)[:10]]), PARAMS)
    assert all(int(signal.direction[0]) == 0 for signal in fired.values())


@pytest.mark.parametrize("component", ["strength", "agreement", "trend", "liquidity"])
def test_conviction_never_falls_when_a_component_rises(component: str) -> None:
    rng = np.random.default_rng(7)
    weights = ConvictionWeights()
    for _ in range(200):
        parts = dict(zip(["strength", "agreement", "trend", "liquidity"], rng.uniform(0, 1, 4), strict=True))
        higher = parts | {component: min(parts[component] + rng.uniform(0, 0.5), 1.0)}
        assert conviction(higher, weights) >= conviction(parts, weights)
        assert 0 <= conviction(parts, weights) <= 1


def trigger(conviction_value: float, product: str = "BTC-USD", side: str = "BUY") -> Trigger:
    parts = {"strength": 0.5, "agreement": 0.0, "trend": 0.5, "liquidity": 0.5}
    return Trigger(product_id=product, signal="momentum", side=side, conviction=conviction_value, components=parts)  # type: ignore[arg-type]


def test_the_threshold_is_inclusive() -> None:
    made = propose([trigger(0.28)], threshold=0.28, config=CONFIG, cycle_id="c1", now=NOW)
    assert len(made) == 1 and made[0].conviction == 0.28
    assert propose([trigger(0.2799)], threshold=0.28, config=CONFIG, cycle_id="c1", now=NOW) == []


def test_one_proposal_per_product_on_its_best_side_with_every_component_kept() -> None:
    made = propose(
        [trigger(0.3), trigger(0.4), trigger(0.5, side="SELL"), trigger(0.9, product="ETH-USD")],
        threshold=0.28,
        config=CONFIG,
        cycle_id="c7",
        now=NOW,
    )
    assert [(p.product_id, p.side, p.conviction) for p in made] == [("BTC-USD", "SELL", 0.5), ("ETH-USD", "BUY", 0.9)]
    assert set(made[1].components) == {"strength", "agreement", "trend", "liquidity", "signal_momentum"}
    again = propose([trigger(0.9, product="ETH-USD")], threshold=0.28, config=CONFIG, cycle_id="c7", now=NOW)
    assert again[0].proposal_id == made[1].proposal_id
    tied = propose([trigger(0.4), trigger(0.4, side="SELL")], threshold=0.28, config=CONFIG, cycle_id="c8", now=NOW)
    assert tied == []  # a buy and a sell as sure as each other: neither


def test_a_proposal_carries_the_profiles_exits_unless_the_config_overrides_one() -> None:
    [plain] = propose([trigger(0.5)], threshold=0.28, config=CONFIG, cycle_id="c9", now=NOW)
    assert (plain.stop_loss_pct, plain.take_profit_pct, plain.time_stop_s) == (1.5, 3, 4 * 3600)
    tuned = StrategyConfig(time_stop_s=30, take_profit_pct=1.2)
    [made] = propose([trigger(0.5)], threshold=0.28, config=tuned, cycle_id="c9", now=NOW)
    assert (made.stop_loss_pct, made.take_profit_pct, made.time_stop_s) == (1.5, 1.2, 30)


def test_ratio_is_zero_without_triggers() -> None:
    assert ratio(0, 0) == 0.0 and ratio(4, 1) == 0.25


def test_the_sweep_counts_what_each_threshold_would_have_proposed() -> None:
    cycles = [[trigger(0.29), trigger(0.31), trigger(0.27, product="ETH-USD")], [trigger(0.25)], []]
    assert sweep(cycles, [0.2, 0.28, 0.30, 0.32]) == {0.2: 3, 0.28: 1, 0.30: 1, 0.32: 0}


def test_triggers_carry_agreement_trend_and_liquidity() -> None:
    close = wiggle(1)
    close[-1] = close[-25:-1].max() * 1.02
    volume = noisy_volume(1)
    volume[-1] = 400.0
    data = candles([close], [volume])
    found = find_triggers(
        data.products,
        evaluate(data, PARAMS),
        list(trend(data, PARAMS)),
        {"P0-USD": Liquidity(spread_bps=5, quote_volume=1e8)},
        CONFIG,
    )
    breakout = next(t for t in found if t.signal == "breakout")
    assert breakout.side == "BUY" and breakout.components["agreement"] == pytest.approx(1 / 3, abs=1e-6)
    assert breakout.components["liquidity"] == pytest.approx(0.95)
    unknown = find_triggers(data.products, evaluate(data, PARAMS), [0.0], {}, CONFIG)
    assert all(t.components["liquidity"] == 0 for t in unknown)


def test_a_flat_volume_window_is_no_spike() -> None:
    close = wiggle(6)
    close[-1] = close[-2] * 1.001
    volume = np.zeros(BARS)
    volume[-1] = 5.0
    fired = evaluate(candles([close], [volume]), PARAMS)
    assert int(fired["volume_spike"].direction[0]) == 0


def test_a_product_too_young_for_the_trend_window_has_no_trend() -> None:
    young = np.full(BARS, np.nan)
    young[-140:] = np.linspace(90, 120, 140)  # rising, but 140 bars of the 144 the trend reads
    old = np.linspace(90, 120, BARS)
    scores = trend(candles([young, old]), PARAMS)
    assert scores[0] == 0 and scores[1] > 0


def test_dynamic_conviction_tightens_on_losses_loosens_on_wins_within_bounds() -> None:
    config = DynamicConviction(enabled=True, step=0.01, floor=0.2, ceiling=0.3)
    assert adjusted(0.28, 0.3, config) == (0.29, "win rate 30% below 40%: tighten")
    assert adjusted(0.28, 0.7, config) == (0.27, "win rate 70% above 60%: loosen")
    assert adjusted(0.28, 0.5, config) is None
    assert adjusted(0.30, 0.1, config) is None  # already at the ceiling
    assert adjusted(0.20, 0.9, config) is None  # already at the floor


def test_dynamic_conviction_never_moves_a_threshold_the_wrong_way() -> None:
    config = DynamicConviction(enabled=True, step=0.01, floor=0.2, ceiling=0.45)
    assert adjusted(0.60, 0.1, config) is None  # set above the ceiling by hand: losses do not lower it
    assert adjusted(0.10, 0.9, config) is None  # below the floor: wins do not raise it
