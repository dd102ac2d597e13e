"""The soak: two replicas of every service on an accelerated simulator that fails 10 % of calls, through executor
kills, a Redis restart, a ratelimit outage and a strategy leader's death; then the invariants a trader relies on,
checked from outside (the simulator's own counts and orders, the ledger through the API, readiness as seen by a
client).

`python -m devtools.soak [--seconds 900]` (`make soak`); `tests/e2e/test_soak.py` runs a short one in `make test`.
Uses a private Redis with AOF on a free port, so it can restart it; everything else on free ports.
"""

from __future__ import annotations

import argparse
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devtools.redis_server import RedisServer, free_port
from devtools.stack import Stack
from shared.exchange.auth import ApiKey, JwtSigner
from shared.settings import DEV_API_TOKEN

SERVICES = ("ratelimit", "universe", "strategy", "executor")
SIM_SPEED = 60
CYCLE_S = 2.0
AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
PRIVATE_PER_S, PUBLIC_PER_S = 30, 10
READY_WITHIN_S = 10.0
RATELIMIT_OUTAGE_S = 30.0
# One proposal every 4 s on top of the strategy's: more than a strategy makes, and within what the executor's buy
# decisions (one at a time, across replicas) can take when one exchange call in ten fails (a hanging one costs
# the client's 10 s timeout).
DRIVE_EVERY_S = 4.0
SIM_ENV = {
    "SIM_SPEED": str(SIM_SPEED),
    # Coinbase-like latency, and one call in ten failing: half 5xx, half hanging until the client gives up.
    "EXCHANGE_SIM__FAULTS__LATENCY_MS": "60",
    "EXCHANGE_SIM__FAULTS__LATENCY_JITTER_MS": "40",
    "EXCHANGE_SIM__FAULTS__ERROR_5XX_FRACTION": "0.05",
    "EXCHANGE_SIM__FAULTS__TIMEOUT_FRACTION": "0.05",
}
# The risk limits opened up so the driver's flow turns into orders; positions held a few seconds.
SERVICE_ENV = {
    "STRATEGY__CYCLE_INTERVAL_S": str(CYCLE_S),
    "STRATEGY__TIME_STOP_S": "5",
    "UNIVERSE__REFRESH_INTERVAL_S": "10",
    "UNIVERSE__MAX_PRODUCTS": "20",
    "RISK__MAX_TRADES_PER_HOUR": "10000",
    "RISK__MAX_OPEN_POSITIONS": "1000",
    "RISK__COOLDOWN_S": "0",
    "RISK__MAX_TOTAL_QUOTE": "1000000",
    "RISK__MAX_POSITION_QUOTE": "1000000",
    "RISK__MAX_DAILY_LOSS_QUOTE": "1000000",
    "WORKER__CLAIM_IDLE_S": "5",
    "WORKER__MONITOR_INTERVAL_S": "1",
}
TERMINAL = {"rejected", "filled", "exited", "failed"}
TIME_STOP_S = 3
# A stop is checked every second. Typically it is late by the exit's few calls; at worst by a dead holder's
# position lock (15 s to run out, as after the Redis restart) and a call hanging until the client's 10 s timeout.
# Exits that queued behind one another, or for quota in fallback, were late by 10-11 s at the median.
EXIT_LATE_P50_S, EXIT_LATE_MAX_S = 5.0, 40.0


@dataclass
class Report:
    seconds: float
    simulated_s: float
    proposals_accepted: int = 0
    orders_on_exchange: int = 0
    trades_in_ledger: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rejections: Counter[str] = field(default_factory=Counter)
    exchange_429s: int = 0
    limited_endpoints: dict[str, int] = field(default_factory=dict)
    exchange_requests: int = 0
    duplicate_orders: list[str] = field(default_factory=list)
    orders_not_in_ledger: list[str] = field(default_factory=list)
    lost_proposals: list[str] = field(default_factory=list)
    trades_lost_in_redis_restart: list[str] = field(default_factory=list)
    balance_mismatches: list[str] = field(default_factory=list)
    ready_after_redis_s: float | None = None
    outage_max_rate: dict[str, int] = field(default_factory=dict)
    leader_takeover_s: float | None = None
    proposal_to_order_s: list[float] = field(default_factory=list)
    exit_late_s: list[float] = field(default_factory=list)  # the driver's positions: exit past their time stop
    quota_decision_s: list[float] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    def failures(self) -> list[str]:
        found = []
        if self.exchange_429s:
            found.append(f"{self.exchange_429s} 429s from the exchange: {self.limited_endpoints}")
        found += [f"duplicate orders: {d}" for d in self.duplicate_orders]
        found += [f"order on the exchange but not in the ledger: {o}" for o in self.orders_not_in_ledger]
        found += [f"proposal lost (202, no final outcome): {p}" for p in self.lost_proposals]
        found += [f"trade lost across the Redis restart: {t}" for t in self.trades_lost_in_redis_restart]
        found += [f"balance differs from the ledger: {b}" for b in self.balance_mismatches]
        if self.ready_after_redis_s is None or self.ready_after_redis_s > READY_WITHIN_S:
            found.append(
                f"services ready {self.ready_after_redis_s} s after Redis came back (at most {READY_WITHIN_S})"
            )
        for pool, limit in (("private", PRIVATE_PER_S), ("public", PUBLIC_PER_S)):
            if self.outage_max_rate.get(pool, 0) > limit:
                found.append(f"{pool} calls reached {self.outage_max_rate[pool]}/s while ratelimit was down")
        if self.leader_takeover_s is None or self.leader_takeover_s > CYCLE_S + 1:
            found.append(f"new strategy leader after {self.leader_takeover_s} s (one cycle is {CYCLE_S} s)")
        if self.exit_late_s and statistics.median(self.exit_late_s) > EXIT_LATE_P50_S:
            found.append(f"positions exited {statistics.median(self.exit_late_s):.1f} s past their time stop (p50)")
        if self.exit_late_s and max(self.exit_late_s) > EXIT_LATE_MAX_S:
            found.append(f"a position exited {max(self.exit_late_s):.1f} s past its time stop")
        if not self.proposals_accepted or not self.orders_on_exchange:
            found.append("the run made no orders: nothing was shown")
        return found

    def table(self) -> str:
        def pct(values: list[float], q: float) -> str:
            if len(values) < 2:
                return f"{values[0] * 1000:.0f} ms" if values else "-"
            return f"{statistics.quantiles(values, n=100, method='inclusive')[q - 1] * 1000:.0f} ms"

        rows = [
            ("run", f"{self.seconds:.0f} s real, {self.simulated_s / 3600:.1f} h simulated at {SIM_SPEED}x"),
            ("proposals accepted (202)", str(self.proposals_accepted)),
            ("outcomes", ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))),
            ("rejections by reason", ", ".join(f"{k} {v}" for k, v in sorted(self.rejections.items())) or "none"),
            ("orders on the exchange / trades in the ledger", f"{self.orders_on_exchange} / {self.trades_in_ledger}"),
            ("exchange requests / 429s", f"{self.exchange_requests} / {self.exchange_429s}"),
            ("duplicate orders", str(len(self.duplicate_orders))),
            ("orders missing from the ledger", str(len(self.orders_not_in_ledger))),
            ("lost proposals", str(len(self.lost_proposals))),
            ("trades lost across the Redis restart", str(len(self.trades_lost_in_redis_restart))),
            ("balances differing from the ledger", str(len(self.balance_mismatches))),
            ("all services ready after Redis came back", f"{self.ready_after_redis_s} s (limit {READY_WITHIN_S})"),
            (
                "busiest second while ratelimit was down",
                ", ".join(f"{k} {v}/s" for k, v in self.outage_max_rate.items())
                + f" (limits {PRIVATE_PER_S}, {PUBLIC_PER_S})",
            ),
            ("new strategy leader after", f"{self.leader_takeover_s} s (cycle {CYCLE_S} s)"),
            (
                "proposal -> order p50 / p99",
                f"{pct(self.proposal_to_order_s, 50)} / {pct(self.proposal_to_order_s, 99)} "
                f"({len(self.proposal_to_order_s)} orders)",
            ),
            (
                "exit past the time stop p50 / max",
                f"{pct(self.exit_late_s, 50)} / {max(self.exit_late_s, default=0) * 1000:.0f} ms "
                f"({len(self.exit_late_s)} exits, limits {EXIT_LATE_P50_S:.0f} s / {EXIT_LATE_MAX_S:.0f} s)",
            ),
            (
                "quota decision p50 / p99",
                f"{pct(self.quota_decision_s, 50)} / {pct(self.quota_decision_s, 99)} "
                f"({len(self.quota_decision_s)} decisions)",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        lines = ["| measure | figure |", "|---|---|", *(f"| {k.ljust(width)} | {v} |" for k, v in rows)]
        lines += ["", "events:", *(f"  {e}" for e in self.events)]
        failures = self.failures()
        lines += ["", "invariants: " + ("all hold" if not failures else "BROKEN"), *(f"  - {f}" for f in failures)]
        return "\n".join(lines)


class Soak:
    def __init__(self, seconds: float, folder: Path):
        self.seconds = seconds
        self.folder = folder
        self.prefix = f"soak:{uuid.uuid4().hex[:8]}:"
        self.redis = RedisServer(port=free_port(), data_dir=folder / "redis", aof=True)
        sim_port = free_port()
        env = SERVICE_ENV | {"KEY_PREFIX": self.prefix}
        self.replicas = [
            Stack(
                ports={name: free_port() for name in SERVICES} | {"exchange_sim": sim_port},
                redis_url=self.redis.url,
                extra_env=env | SIM_ENV,
                log_dir=folder / f"logs-{i}",
            )
            for i in range(2)
        ]
        self.sim = self.replicas[0].url("exchange_sim")
        self.report = Report(seconds=seconds, simulated_s=seconds * SIM_SPEED)
        self.accepted: dict[str, float] = {}
        self.stop_driving = threading.Event()
        self.lock = threading.Lock()
        self.rng = random.Random(7)
        key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        self.signer = JwtSigner(ApiKey("organizations/soak/apiKeys/referee", key.decode()))
        self.started = 0.0

    # -- the run -------------------------------------------------------------------------------------------

    def run(self) -> Report:
        self.redis.start()
        try:
            self.replicas[0].start()
            self.replicas[1].start(list(SERVICES))
            for stack in self.replicas:
                stack.wait_ready(90)
            self.started = time.monotonic()
            products = self.tradable_products()
            threads = [
                threading.Thread(target=self.drive, args=(products,), daemon=True),
                threading.Thread(target=self.probe_quota, daemon=True),
            ]
            for thread in threads:
                thread.start()
            self.faults()
            self.stop_driving.set()
            for stack in self.replicas:  # no new proposals from here on: what is in flight is drained
                stack.processes["strategy"].terminate()
            for thread in threads:
                thread.join(30)
            self.drain()
            self.check()
        finally:
            for stack in reversed(self.replicas):
                stack.stop()
            self.redis.stop()
        self.report.seconds = time.monotonic() - self.started
        self.report.simulated_s = self.report.seconds * SIM_SPEED
        return self.report

    def at(self, fraction: float) -> None:
        """Wait until this fraction of the run has passed."""
        delay = self.started + fraction * self.seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def event(self, text: str) -> None:
        limited = self.sim_stats()["rate_limited"]
        self.report.events.append(f"{time.monotonic() - self.started:6.1f} s  {text} (429s so far: {limited})")
        print(f"soak: {self.report.events[-1].strip()}", flush=True)

    def faults(self) -> None:
        """The schedule: five executor kills, a leader's death, a ratelimit outage, a Redis restart."""
        kills = iter([0.05, 0.15, 0.45, 0.75, 0.9])
        self.at(next(kills))
        self.kill_executor(0)
        self.at(next(kills))
        self.kill_executor(1)
        self.at(0.25)
        self.kill_leader()
        self.at(0.35)
        outage = threading.Thread(target=self.ratelimit_outage)
        outage.start()
        self.at(next(kills))
        self.kill_executor(0)
        outage.join()
        self.at(0.65)
        self.restart_redis()
        self.at(next(kills))
        self.kill_executor(1)
        self.at(next(kills))
        self.kill_executor(0)
        self.at(1.0)

    def kill(self, stack: Stack, name: str) -> None:
        stack.processes[name].send_signal(signal.SIGKILL)
        stack.processes[name].wait(10)

    def kill_executor(self, replica: int) -> None:
        stack = self.replicas[replica]
        self.kill(stack, "executor")
        self.event(f"SIGKILL executor {replica}")
        time.sleep(1)
        stack.start(["executor"])
        self.event(f"executor {replica} started again")

    def kill_leader(self) -> None:
        leaders = [
            i
            for i, stack in enumerate(self.replicas)
            if self.metric(stack.url("strategy"), "trader_strategy_leader") == 1
        ]
        if len(leaders) != 1:
            self.event(f"no single strategy leader to kill: {leaders}")
            return
        dead, other = leaders[0], 1 - leaders[0]
        self.kill(self.replicas[dead], "strategy")
        killed = time.monotonic()
        self.event(f"SIGKILL strategy {dead}, the leader")
        while time.monotonic() - killed < 30:
            if self.metric(self.replicas[other].url("strategy"), "trader_strategy_leader") == 1:
                self.report.leader_takeover_s = round(time.monotonic() - killed, 2)
                break
            time.sleep(0.1)
        self.event(f"strategy {other} leads after {self.report.leader_takeover_s} s")
        self.replicas[dead].start(["strategy"])

    def ratelimit_outage(self) -> None:
        for stack in self.replicas:
            stack.processes["ratelimit"].terminate()
        for stack in self.replicas:
            stack.processes["ratelimit"].wait(15)
        self.event(f"ratelimit stopped (both replicas) for {RATELIMIT_OUTAGE_S:.0f} s")
        last = self.sim_stats()
        worst = {"private": 0, "public": 0}
        ends = time.monotonic() + RATELIMIT_OUTAGE_S
        while time.monotonic() < ends:
            time.sleep(1)
            now = self.sim_stats()
            for pool, count in self.per_pool(last, now).items():
                worst[pool] = max(worst[pool], count)
            last = now
        self.report.outage_max_rate = worst
        for stack in self.replicas:
            stack.start(["ratelimit"])
        self.event("ratelimit started again")

    def restart_redis(self) -> None:
        before = {t["trade_id"] for t in self.trades()}
        self.redis.stop()
        self.event(f"Redis stopped ({len(before)} trades in the ledger)")
        time.sleep(2)
        self.redis.start()
        back = time.monotonic()
        self.event("Redis started again (AOF)")
        urls = [stack.url(name) for stack in self.replicas for name in SERVICES] + [self.sim]
        pending = set(urls)
        with httpx.Client(timeout=1) as client:
            while pending and time.monotonic() - back < 60:
                for url in list(pending):
                    try:
                        if client.get(f"{url}/readyz").status_code == 200:
                            pending.discard(url)
                    except httpx.HTTPError:
                        pass
                time.sleep(0.1)
        self.report.ready_after_redis_s = None if pending else round(time.monotonic() - back, 2)
        self.event(f"every service ready {self.report.ready_after_redis_s} s after Redis came back")
        after = {t["trade_id"] for t in self.trades()}
        self.report.trades_lost_in_redis_restart = sorted(before - after)

    # -- load ----------------------------------------------------------------------------------------------

    def tradable_products(self) -> list[str]:
        products = self.sim_get("/api/v3/brokerage/market/products", {}, signed=False)["products"]
        usable = [
            p
            for p in products
            if p["quote_currency_id"] == "USD"
            and p["status"] == "online"
            and not (p["trading_disabled"] or p["cancel_only"] or p["limit_only"] or p["post_only"])
        ]
        usable.sort(key=lambda p: -float(p.get("volume_24h") or 0) * float(p.get("price") or 0))
        return [p["product_id"] for p in usable[:10]]

    def drive(self, products: list[str]) -> None:
        """Proposals straight to the executors, alternating replicas; a refused connection goes to the other."""
        with httpx.Client(timeout=5, headers=AUTH) as client:
            turn = 0
            while not self.stop_driving.is_set():
                now = datetime.now(UTC)
                proposal = {
                    "proposal_id": str(uuid.uuid4()),
                    "product_id": self.rng.choice(products),
                    "side": "BUY",
                    "conviction": 0.6,
                    "components": {"soak": 1.0},
                    "quote_size": "15",
                    "stop_loss_pct": 50,
                    "take_profit_pct": 500,
                    "time_stop_s": TIME_STOP_S,
                    "created_at": now.isoformat(),
                    "expires_at": (now + timedelta(seconds=120)).isoformat(),
                }
                for replica in (turn % 2, 1 - turn % 2):
                    try:
                        answer = client.post(f"{self.replicas[replica].url('executor')}/v1/proposals", json=proposal)
                    except httpx.HTTPError:
                        continue
                    if answer.status_code == 202:
                        with self.lock:
                            self.accepted[proposal["proposal_id"]] = time.time()
                        break
                turn += 1
                time.sleep(DRIVE_EVERY_S)

    def probe_quota(self) -> None:
        """A client's view of quota decisions: two acquires a second, on whichever ratelimit replica answers."""
        with httpx.Client(timeout=5, headers=AUTH) as client:
            turn = 0
            while not self.stop_driving.is_set():
                base = self.replicas[turn % 2].url("ratelimit")
                sent = time.perf_counter()
                try:
                    answer = client.post(f"{base}/v1/acquire", json={"endpoint": "list_orders", "max_wait_ms": 1000})
                    if answer.status_code == 200:
                        self.report.quota_decision_s.append(time.perf_counter() - sent)
                except httpx.HTTPError:
                    pass
                turn += 1
                time.sleep(0.5)

    # -- checks --------------------------------------------------------------------------------------------

    def drain(self) -> None:
        """Wait for every accepted proposal's final outcome, every position closed and every filled order recorded."""
        executor = self.replicas[0].url("executor")
        deadline = time.monotonic() + 180
        open_ids = set(self.accepted)
        positions: list[Any] = []
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < deadline:
                for pid in list(open_ids):
                    answer = client.get(f"{executor}/v1/proposals/{pid}")
                    if answer.status_code == 200 and answer.json()["status"] in TERMINAL:
                        open_ids.discard(pid)
                positions = client.get(f"{executor}/v1/positions").json()
                if not open_ids and not positions and len(self.trades()) == self.filled_orders():
                    break
                time.sleep(1)
        self.event(f"drained: {len(open_ids)} proposals without a final outcome, {len(positions)} open positions")

    def check(self) -> None:
        report = self.report
        stats = self.sim_stats()
        report.exchange_429s, report.exchange_requests = stats["rate_limited"], stats["requests"]
        report.limited_endpoints = {
            e: t["rate_limited"] for e, t in stats["endpoints"].items() if t.get("rate_limited")
        }
        executor = self.replicas[0].url("executor")
        with httpx.Client(timeout=10) as client:
            outcomes = {pid: client.get(f"{executor}/v1/proposals/{pid}").json() for pid in self.accepted}
        report.proposals_accepted = len(self.accepted)
        report.outcomes = Counter(o.get("status", "missing") for o in outcomes.values())
        report.rejections = Counter(o.get("reason") for o in outcomes.values() if o.get("status") == "rejected")
        report.lost_proposals = sorted(
            f"{pid} ({o.get('status', 'no outcome')})" for pid, o in outcomes.items() if o.get("status") not in TERMINAL
        )
        report.proposal_to_order_s = [
            o["updated_at"] - o["received_at"] for o in outcomes.values() if o.get("status") in ("filled", "exited")
        ]
        trades = self.trades()
        report.trades_in_ledger = len(trades)
        orders = [o for o in self.sim_orders() if o["status"] == "FILLED"]
        report.orders_on_exchange = len(orders)
        in_ledger = Counter(t["order_id"] for t in trades)
        report.orders_not_in_ledger = sorted(o["order_id"] for o in orders if o["order_id"] not in in_ledger)
        report.duplicate_orders = sorted(f"order {oid} recorded {n} times" for oid, n in in_ledger.items() if n > 1)
        per_position = Counter((t["proposal_id"], t["side"]) for t in trades)
        report.duplicate_orders += sorted(f"{side} x{n} for {pid}" for (pid, side), n in per_position.items() if n > 1)
        report.balance_mismatches = self.balance_mismatches(trades)
        bought = {t["proposal_id"]: t["at"] for t in trades if t["side"] == "BUY"}
        report.exit_late_s = [
            t["at"] - bought[t["proposal_id"]] - TIME_STOP_S
            for t in trades
            if t["side"] == "SELL"
            and t["exit_reason"] == "time_stop"
            and t["proposal_id"] in self.accepted
            and t["proposal_id"] in bought
        ]

    def balance_mismatches(self, trades: list[dict[str, Any]]) -> list[str]:
        starting = {
            k: Decimal(str(v))
            for k, v in httpx.get(f"{self.sim}/v1/config").json()["exchange_sim"]["starting_balances"].items()
        }
        expected = dict(starting)
        for trade in trades:
            base, quote = trade["product_id"].split("-")
            size, value, fees = (Decimal(trade[k]) for k in ("base_size", "quote_value", "fees_quote"))
            sign = 1 if trade["side"] == "BUY" else -1
            expected[base] = expected.get(base, Decimal(0)) + sign * size
            expected[quote] = expected.get(quote, Decimal(0)) - sign * value - fees
        actual = self.sim_balances()
        return [
            f"{currency}: exchange {actual.get(currency, Decimal(0))}, ledger implies {amount}"
            for currency, amount in sorted(expected.items())
            if actual.get(currency, Decimal(0)) != amount
        ]

    # -- reading the outside world -------------------------------------------------------------------------

    def metric(self, base: str, name: str) -> float | None:
        try:
            text = httpx.get(f"{base}/metrics", timeout=2).text
        except httpx.HTTPError:
            return None
        for line in text.splitlines():
            if line.startswith(f"{name} "):
                return float(line.split()[1])
        return None

    def trades(self) -> list[dict[str, Any]]:
        for stack in self.replicas:
            try:
                return httpx.get(f"{stack.url('executor')}/v1/trades", params={"limit": 10_000}, timeout=10).json()
            except httpx.HTTPError:
                continue
        raise RuntimeError("no executor answers")

    def sim_stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.sim}/sim/stats", timeout=5).json()

    @staticmethod
    def per_pool(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
        public = {"list_products", "get_product", "server_time"}
        counts = {"private": 0, "public": 0}
        for endpoint, tally in after["endpoints"].items():
            done = tally.get("requests", 0) - before["endpoints"].get(endpoint, {}).get("requests", 0)
            counts["public" if endpoint in public else "private"] += done
        return counts

    def sim_get(self, path: str, params: dict[str, Any], *, signed: bool = True) -> dict[str, Any]:
        host = self.sim.removeprefix("http://")
        for _ in range(20):  # the simulator's faults apply to the referee too
            headers = {"Authorization": f"Bearer {self.signer.token('GET', host, path)}"} if signed else {}
            try:
                answer = httpx.get(f"{self.sim}{path}", params=params, headers=headers, timeout=15)
            except httpx.HTTPError:
                continue
            if answer.status_code == 200:
                try:
                    return answer.json()
                except ValueError:
                    continue
            time.sleep(0.2)
        raise RuntimeError(f"the simulator did not answer {path}")

    def sim_orders(self) -> list[dict[str, Any]]:
        orders, cursor = [], ""
        while True:
            page = self.sim_get("/api/v3/brokerage/orders/historical/batch", {"limit": 1000, "cursor": cursor})
            orders += page["orders"]
            cursor = page.get("cursor", "")
            if not page.get("has_next"):
                return orders

    def filled_orders(self) -> int:
        return sum(1 for order in self.sim_orders() if order["status"] == "FILLED")

    def sim_balances(self) -> dict[str, Decimal]:
        accounts = self.sim_get("/api/v3/brokerage/accounts", {"limit": 250})["accounts"]
        return {a["currency"]: Decimal(a["available_balance"]["value"]) + Decimal(a["hold"]["value"]) for a in accounts}


def run(seconds: float, folder: Path | None = None) -> Report:
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        return Soak(seconds, folder or Path(scratch)).run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=900, help="real seconds of load and faults")
    parser.add_argument("--keep", type=Path, help="keep the services' logs and Redis data in this folder")
    args = parser.parse_args()
    report = run(args.seconds, args.keep)
    print(report.table())
    return 1 if report.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
