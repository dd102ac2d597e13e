"""The strategy's metrics: the design note's `trader_triggers_*` and `trader_proposals_*` names, exactly."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.strategy.signals import SIGNALS
from shared.settings import StageBudgets

CONVICTION_BUCKETS = (0.1, 0.2, 0.25, 0.28, 0.3, 0.34, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
STAGE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("universe_build", "market_data", "signals", "execution")


class StrategyMetrics:
    def __init__(self, registry: CollectorRegistry, budgets: StageBudgets):
        self.triggers_detected = Gauge(
            "trader_triggers_detected", "Triggers detected in the last cycle", registry=registry
        )
        self.proposals_generated = Gauge(
            "trader_proposals_generated", "Proposals generated in the last cycle", registry=registry
        )
        self.ratio = Gauge(
            "trader_triggers_to_proposals_ratio",
            "Proposals over triggers in the last cycle (0 when there were no triggers); healthy 0.2-0.5",
            registry=registry,
        )
        self.triggers = Counter("trader_triggers_total", "Triggers detected, by signal", ["signal"], registry=registry)
        self.proposals = Counter("trader_proposals_total", "Proposals generated", registry=registry)
        self.conviction = Histogram(
            "trader_conviction", "Conviction of each trigger", buckets=CONVICTION_BUCKETS, registry=registry
        )
        self.threshold = Gauge(
            "trader_conviction_threshold", "Conviction a trigger needs to become a proposal", registry=registry
        )
        self.cycles = Counter(
            "trader_cycles_total",
            "Strategy cycles by result: evaluated, no_new_data (no candle closed since the last), failed",
            ["result"],
            registry=registry,
        )
        self.stage_seconds = Histogram(
            "trader_cycle_stage_seconds",
            "Time of each stage of a cycle (budgets: latency.stage_budgets.*)",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.stage_over_budget = Counter(
            "trader_cycle_stage_budget_exceeded_total",
            "Cycle stages slower than their latency.stage_budgets.* entry",
            ["stage"],
            registry=registry,
        )
        self.cycles_since_trigger = Gauge(
            "trader_cycles_since_last_trigger",
            "Evaluated cycles since the last one with a trigger (the note's signal drought: > 12)",
            registry=registry,
        )
        self.skipped = Counter(
            "trader_strategy_products_skipped_total",
            "Products left out of a cycle because their market data could not be had, by reason",
            ["reason"],
            registry=registry,
        )
        self.proposals_expired = Counter(
            "trader_proposals_expired_total",
            "Proposals that expired before the executor accepted them",
            registry=registry,
        )
        self.stage_budget = Gauge(
            "trader_cycle_stage_budget_seconds",
            "Seconds each cycle stage may take (latency.stage_budgets.*), to draw beside trader_cycle_stage_seconds",
            ["stage"],
            registry=registry,
        )
        self.leader = Gauge("trader_strategy_leader", "1 while this replica runs the cycles", registry=registry)
        for signal in SIGNALS:
            self.triggers.labels(signal)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
            self.stage_over_budget.labels(stage)
            self.stage_budget.labels(stage).set(getattr(budgets, stage))
