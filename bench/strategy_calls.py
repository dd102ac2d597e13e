"""Exchange calls per strategy cycle at steady state, counted by the simulator, on the stack's real processes.

The simulator runs 60 times faster (a five-minute candle closes every 5 real seconds) and the strategy cycles every
second, so most cycles find no new candle and a few find one. After the first evaluated cycle (which fetches each
product's lookback once) it counts, for STEADY_S seconds: candle calls per product per new candle, list_products
calls (none are due while the product list's TTL runs) and the cycles by result.

Run with `python -m bench.strategy_calls` (part of `make bench`).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import httpx

from devtools.redis_server import delete_prefix, free_port, redis_answers
from devtools.stack import CONTRACT_PORTS, Stack

REDIS_URL = "redis://127.0.0.1:6379/0"
STEADY_S = 30.0
BAR_REAL_S = 5.0  # a five-minute candle at SIM_SPEED 60


def endpoint_calls(stack: Stack) -> dict[str, int]:
    stats = httpx.get(f"{stack.url('exchange_sim')}/sim/stats").json()["endpoints"]
    return {name: counts.get("requests", 0) for name, counts in stats.items()}


def cycles(stack: Stack) -> dict[str, float]:
    found = {}
    for line in httpx.get(f"{stack.url('strategy')}/metrics").text.splitlines():
        if line.startswith("trader_cycles_total{"):
            found[line.split('"')[1]] = float(line.split()[-1])
    return found


def main() -> None:
    if not redis_answers(REDIS_URL):
        raise SystemExit(f"bench: no Redis at {REDIS_URL}; start one (make run starts one) and run again")
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    env = {"KEY_PREFIX": prefix, "SIM_SPEED": "60", "STRATEGY__CYCLE_INTERVAL_S": "1", "LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(
            ports={name: free_port() for name in CONTRACT_PORTS},
            redis_url=REDIS_URL,
            extra_env=env,
            log_dir=Path(tmp),
        )
        try:
            stack.start()
            stack.wait_ready()
            deadline = time.monotonic() + 60
            while cycles(stack).get("evaluated", 0) < 1:
                if time.monotonic() > deadline:
                    raise SystemExit("bench: the strategy ran no cycle in 60 s")
                time.sleep(0.2)
            products = httpx.get(f"{stack.url('universe')}/v1/universe").json()["size"]
            before, cycles_before = endpoint_calls(stack), cycles(stack)
            time.sleep(STEADY_S)
            after, cycles_after = endpoint_calls(stack), cycles(stack)
        finally:
            stack.stop()
            delete_prefix(REDIS_URL, prefix)
    calls = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    evaluated = cycles_after.get("evaluated", 0) - cycles_before.get("evaluated", 0)
    idle = cycles_after.get("no_new_data", 0) - cycles_before.get("no_new_data", 0)
    new_candles = STEADY_S / BAR_REAL_S
    per_product_candle = calls.get("get_candles", 0) / products / max(evaluated, 1)
    print(f"\nstrategy at steady state, {STEADY_S:g} s at SIM_SPEED 60 ({new_candles:g} new five-minute candles):\n")
    print("| measure | figure | bound |\n|---|---:|---|")
    print(f"| cycles evaluated / with no new candle | {evaluated:.0f} / {idle:.0f} | |")
    print(f"| products in the universe | {products} | |")
    print(f"| candle calls | {calls.get('get_candles', 0)} | one per product per new candle |")
    print(f"| candle calls per product per evaluated cycle | {per_product_candle:.2f} | <= 1 |")
    print(f"| list_products calls | {calls.get('list_products', 0)} | 0 within the product list's TTL |")
    print(f"| server_time calls | {calls.get('server_time', 0)} | one per cycle |")
    print(f"| best_bid_ask calls | {calls.get('best_bid_ask', 0)} | one per universe build |")


if __name__ == "__main__":
    main()
