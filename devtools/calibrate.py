"""Calibration of the strategy's defaults on the bundled simulator: the whole stack, the simulator accelerated over
at least one simulated day, then the figures the design note's success criteria speak of.

Run with `python -m devtools.calibrate [--speed 288] [--days 1]` (Redis at REDIS_URL or 127.0.0.1:6379). It starts
the five services on free ports under a key prefix of its own, lets the strategy cycle every second, and prints:
the cycles with triggers, the triggers-to-proposals ratio on them (the healthy band is 0.2-0.5), the trades, and
the trades per simulated hour (the note's overtrading line is 10).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from devtools.redis_server import delete_prefix, free_port, redis_answers
from devtools.stack import CONTRACT_PORTS, Stack
from services.strategy.conviction import Trigger, chosen

DAY_S = 86_400
HOUR_S = 3600


def recent_cycles(strategy: str) -> list[dict[str, Any]]:
    return httpx.get(f"{strategy}/v1/triggers", params={"cycles": 50}, timeout=30).json()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=288.0, help="simulated seconds per real second")
    parser.add_argument("--days", type=float, default=1.0, help="simulated days to run")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    if not redis_answers(redis_url):
        raise SystemExit(f"calibrate: no Redis at {redis_url}")
    prefix = f"calibrate:{uuid.uuid4().hex[:8]}:"
    env = {
        "KEY_PREFIX": prefix,
        "SIM_SPEED": repr(args.speed),
        "STRATEGY__CYCLE_INTERVAL_S": "1",
        # proposals live a few simulated minutes; the executor's clock is the wall clock
        "STRATEGY__PROPOSAL_TTL_S": "30",
        "LOG_LEVEL": "WARNING",
    }
    real_s = args.days * DAY_S / args.speed
    seen: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(
            ports={name: free_port() for name in CONTRACT_PORTS}, redis_url=redis_url, extra_env=env, log_dir=Path(tmp)
        )
        try:
            stack.start()
            stack.wait_ready()
            strategy, executor = stack.url("strategy"), stack.url("executor")
            started = time.monotonic()
            print(f"calibrate: {args.days:g} simulated day(s) at {args.speed:g}x: {real_s:.0f} s of real time")
            while time.monotonic() - started < real_s:
                for report in recent_cycles(strategy):
                    if report["result"] == "evaluated":
                        seen[report["cycle_id"]] = report
                time.sleep(5)
            for report in recent_cycles(strategy):
                if report["result"] == "evaluated":
                    seen[report["cycle_id"]] = report
            trades = httpx.get(f"{executor}/v1/trades", timeout=30).json()
            pnl = httpx.get(f"{executor}/v1/pnl", timeout=30).json()
            metrics = httpx.get(f"{executor}/metrics", timeout=30).text
        finally:
            stack.stop()
            delete_prefix(redis_url, prefix)
    with_triggers = [r for r in seen.values() if r["triggers"]]
    shares = [
        len(chosen([Trigger.model_validate(t) for t in r["triggers"]], r["threshold"])) / len(r["triggers"])
        for r in with_triggers
    ]
    in_band = sum(1 for share in shares if 0.2 <= share <= 0.5)
    rejected = Counter(
        line.split('reason="')[1].split('"')[0]
        for line in metrics.splitlines()
        if line.startswith("trader_proposals_rejected_total{") and not line.endswith(" 0.0")
    )
    simulated_hours = real_s * args.speed / HOUR_S
    buys = sum(1 for t in trades if t["side"] == "BUY")
    print("\n| measure | figure | the note's criterion |\n|---|---:|---|")
    print(f"| cycles evaluated (candles seen) | {len(seen)} | |")
    print(f"| cycles with triggers | {len(with_triggers)} | |")
    if shares:
        print(
            f"| ratio on cycles with triggers: mean / in 0.2-0.5 | {sum(shares) / len(shares):.2f} / "
            f"{in_band / len(shares):.0%} | healthy 0.2-0.5 on most |"
        )
    print(f"| trades (buys / exits) | {buys} / {len(trades) - buys} | at least 1 |")
    print(f"| trades per simulated hour | {len(trades) / simulated_hours:.2f} | at or under 10 |")
    print(f"| realised PnL / win rate | {pnl['realized']} / {pnl['win_rate']:.0%} | |")
    print(f"| rejections by reason | {dict(rejected)} | |")


if __name__ == "__main__":
    main()
