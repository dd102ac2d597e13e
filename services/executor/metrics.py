"""The executor's metrics (the design note's `trader_trades_*` names)."""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from services.executor.risk import Reason

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ExecutorMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.trades = Counter("trader_trades_total", "Trades done, by side", ["side"], registry=registry)
        self.trades_per_hour = Gauge(
            "trader_trades_per_hour",
            "Trades in the last 3600 s, from the ledger (the note's line: 10)",
            registry=registry,
        )
        self.open_positions = Gauge("trader_open_positions", "Open positions", registry=registry)
        self.realized = Gauge(
            "trader_realized_pnl_usd", "Realised PnL of the closed trades, fees included", registry=registry
        )
        self.unrealized = Gauge(
            "trader_unrealized_pnl_usd", "Open positions at the best bid, less their cost", registry=registry
        )
        self.win_rate = Gauge("trader_win_rate", "Winning share of the last closed trades", registry=registry)
        self.received = Counter(
            "trader_proposals_received_total", "Proposals accepted for processing", registry=registry
        )
        self.rejected = Counter(
            "trader_proposals_rejected_total", "Proposals rejected, by reason", ["reason"], registry=registry
        )
        self.orders = Counter("trader_orders_total", "Orders by side and result", ["side", "result"], registry=registry)
        self.order_latency = Histogram(
            "trader_order_latency_seconds",
            "From a proposal's arrival to its order's terminal state",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.halted = Gauge("trader_halted", "1 while trading is halted", registry=registry)
        for side in ("BUY", "SELL"):
            self.trades.labels(side)
        for reason in get_args(Reason):
            self.rejected.labels(reason)
