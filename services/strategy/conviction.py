"""From fired signals to triggers with their conviction, and from triggers to proposals: pure functions.

Conviction is a weighted sum of four components, each 0..1 (weights in `strategy.weights`, non-negative and
summing to 1), so it is 0..1 and never falls when a component rises:
- strength: how far past its threshold the signal fired (0 at the threshold, 1 at twice the threshold past it);
- agreement: the share of the other signals that fired the same way on the same product;
- trend: alignment with the higher-timeframe trend, 0 when flat or against it, 1 when fully with it;
- liquidity: half from the spread (1 at zero, 0 at `liquidity_max_spread_bps`), half from the 24h quote volume
  (1 at `liquidity_full_volume`, on a log scale down to 0 at a thousandth of it), from the universe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel

from services.strategy.settings import ConvictionWeights, StrategyConfig
from services.strategy.signals import SIGNALS, Fired
from shared.proposal import Proposal, proposal_id

Side = Literal["BUY", "SELL"]
COMPONENTS = ("strength", "agreement", "trend", "liquidity")


@dataclass(frozen=True, slots=True)
class Liquidity:
    spread_bps: float
    quote_volume: float


class Trigger(BaseModel):
    product_id: str
    signal: str
    side: Side
    conviction: float
    components: dict[str, float]


def liquidity_score(liquidity: Liquidity | None, config: StrategyConfig) -> float:
    """0..1 from the spread and the 24h quote volume; 0 for a product the universe says nothing about."""
    if liquidity is None:
        return 0.0
    spread = min(max(1 - liquidity.spread_bps / config.liquidity_max_spread_bps, 0.0), 1.0)
    ratio = liquidity.quote_volume / config.liquidity_full_volume
    volume = 0.0 if ratio <= 0 else min(max(1 + math.log10(ratio) / 3, 0.0), 1.0)
    return (spread + volume) / 2


def conviction(components: Mapping[str, float], weights: ConvictionWeights) -> float:
    """The weighted sum of the components, 0..1."""
    total = sum(getattr(weights, name) * components[name] for name in COMPONENTS)
    return round(min(max(total, 0.0), 1.0), 6)


def find_triggers(
    products: tuple[str, ...],
    fired: Mapping[str, Fired],
    trend: Mapping[int, float] | list[float],
    liquidity: Mapping[str, Liquidity],
    config: StrategyConfig,
) -> list[Trigger]:
    """Every signal that fired on every product, with its conviction and components."""
    others = len(SIGNALS) - 1
    found = []
    for index, product_id in enumerate(products):
        directions = {name: int(signal.direction[index]) for name, signal in fired.items()}
        liquid = liquidity_score(liquidity.get(product_id), config)
        for name, direction in directions.items():
            if direction == 0:
                continue
            agreeing = sum(1 for other, d in directions.items() if other != name and d == direction)
            components = {
                "strength": round(float(fired[name].strength[index]), 6),
                "agreement": round(agreeing / others, 6),
                "trend": round(max(direction * float(trend[index]), 0.0), 6),
                "liquidity": round(liquid, 6),
            }
            found.append(
                Trigger(
                    product_id=product_id,
                    signal=name,
                    side="BUY" if direction > 0 else "SELL",
                    conviction=conviction(components, config.weights),
                    components=components,
                )
            )
    return found


def chosen(triggers: list[Trigger], threshold: float) -> dict[str, Trigger]:
    """Per product, the best trigger at or above the threshold; none when a buy and a sell are equally convinced
    (the executor cannot act on both for the same candle)."""
    best: dict[str, Trigger] = {}
    tied: set[str] = set()
    for trigger in triggers:
        if trigger.conviction < threshold:
            continue
        current = best.get(trigger.product_id)
        if current is None or trigger.conviction > current.conviction:
            best[trigger.product_id] = trigger
            tied.discard(trigger.product_id)
        elif trigger.conviction == current.conviction and trigger.side != current.side:
            tied.add(trigger.product_id)
    return {product_id: trigger for product_id, trigger in best.items() if product_id not in tied}


def propose(
    triggers: list[Trigger], *, threshold: float, config: StrategyConfig, cycle_id: str, now: datetime
) -> list[Proposal]:
    """One proposal per product whose best trigger reaches the threshold, on that trigger's side."""
    profile = config.profile_settings
    return [
        Proposal(
            proposal_id=proposal_id(cycle_id, product_id, trigger.side),
            product_id=product_id,
            side=trigger.side,
            conviction=trigger.conviction,
            components={**trigger.components, f"signal_{trigger.signal}": 1.0},
            quote_size=Decimal(str(profile.quote_size)),
            stop_loss_pct=profile.stop_loss_pct,
            take_profit_pct=profile.take_profit_pct,
            time_stop_s=profile.time_stop_s,
            created_at=now,
            expires_at=now + timedelta(seconds=config.proposal_ttl_s),
        )
        for product_id, trigger in sorted(chosen(triggers, threshold).items())
    ]


def ratio(triggers: int, proposals: int) -> float:
    """Proposals over triggers; 0 without triggers, never NaN."""
    return proposals / triggers if triggers else 0.0


def sweep(cycles: list[list[Trigger]], thresholds: list[float]) -> dict[float, int]:
    """How many proposals the recorded cycles' triggers would have made at each threshold."""
    return {threshold: sum(len(chosen(cycle, threshold)) for cycle in cycles) for threshold in thresholds}
