"""Scaling on paper: what one ratelimit replica and one Redis serve, what a stack of N products and M replicas asks
of them and of the exchange, and a model of N x M at real speed saying which limit comes first. Markdown tables;
nothing is asserted.

Supply: raw EVALSHA of the service's acquire.lua at concurrency 64 on one Redis, then one and two ratelimit replicas
through the QuotaClient (bench/ratelimit.py's operations), with Redis's own cost per decision from INFO.

Demand: the real processes on the simulator at SIM_SPEED 60 (a five-minute candle every 5 s), for each universe size
N (UNIVERSE__MAX_PRODUCTS) one replica set of ratelimit, universe, strategy and executor, then a second one on the
same Redis and simulator. Each window runs from one evaluated strategy cycle to the BARS-th after it, so it holds
BARS whole bars of candle calls. Every service and the simulator has a Redis server of its own, so each command is
put down to the service that sent it (one Redis would serve their sum). Rates that follow simulated time (candles)
are scaled to 1x by SIM_SPEED; those that follow real time (cycles, universe builds, position watch, probes) by the
ratio of the default interval to the one used here.

Run with `python -m bench.scaling` (about three and a half minutes on two cores).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import redis
import uvloop
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.measure import Op, Result, closed_loop
from bench.ratelimit import TOKEN, evalsha_op, progress, quota_client, take_op
from bench.service import ENDPOINT, LOG_MARKERS, ServiceProcess, load_config, shorten, wait_all_ready, write_config
from devtools.redis_server import RedisServer, free_port
from devtools.stack import CONTRACT_PORTS, ROOT, Stack
from services.executor.settings import ExecutorSettings
from services.ratelimit.gcra import ACQUIRE_LUA, build_plans, script_args
from services.ratelimit.settings import RatelimitSettings
from services.strategy.settings import StrategySettings
from services.universe.settings import UniverseSettings
from shared.ratelimits import Priority
from shared.redis import KeySpace, create_redis
from shared.settings import load_settings

SIM_SPEED = 60
BENCH_CYCLE_S = 1.0  # STRATEGY__CYCLE_INTERVAL_S here: under one bar (5 s real), so every candle is evaluated
BENCH_REFRESH_S = 5.0  # UNIVERSE__REFRESH_INTERVAL_S here: a few builds per window, each counted
PRODUCTS = (10, 40, 100)
BARS = 4
MODEL_PRODUCTS = (10, 50, 100, 300, 1000)
MODEL_REPLICAS = (1, 2, 4)
CONCURRENCY = 64
WARMUP_S = 1.0
SUPPLY_S = 3.0
PROBES = 20
SERVICES = ("ratelimit", "universe", "strategy", "executor")
REDIS_NAMES = (*SERVICES, "exchange_sim")
HELM_VALUES = ROOT / "deploy" / "helm" / "trader-stack" / "values.yaml"
# The executor's order path (services/executor/orders.py): accounts, create_order and get_order on the private
# pool, get_product (cached a minute) on the public one; at most max_trades_per_hour trades.
ORDER_PRIVATE_CALLS = 3
ORDER_PUBLIC_CALLS = 1
MAX_PRODUCTS_CAP = 1000  # universe.max_products' upper bound (services/universe/settings.py)

FLOOR = "(a) raw EVALSHA acquire.lua, one Redis"
ONE_REPLICA = "(b) 1 ratelimit replica, QuotaClient"
TWO_REPLICAS = "(c) 2 ratelimit replicas, QuotaClient 2x32"

Key = tuple[Any, ...]
Counts = dict[Key, float]


# -- configuration in force ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """The committed configuration the model runs at (config/*.yaml, the helm chart's readiness probe)."""

    cycle_s: float
    bar_s: int
    market_data_budget_s: float
    refresh_s: float
    products_ttl_s: float
    monitor_s: float
    max_trades_per_hour: int
    readiness_s: float
    limits: dict[str, float]
    bursts: dict[str, int]
    granted_share: float
    endpoint_pools: dict[str, tuple[str, ...]]

    def granted(self, pool: str) -> float:
        return self.limits[pool] * self.granted_share


def load_defaults() -> Defaults:
    config = ROOT / "config"
    strategy = load_settings(StrategySettings, config_dir=config)
    universe = load_settings(UniverseSettings, config_dir=config).universe
    executor = load_settings(ExecutorSettings, config_dir=config)
    limits = load_settings(RatelimitSettings, config_dir=config).ratelimit
    probes = yaml.safe_load(HELM_VALUES.read_text())["probes"]["readiness"]
    return Defaults(
        cycle_s=strategy.strategy.cycle_interval_s,
        bar_s=strategy.strategy.granularity.seconds,
        market_data_budget_s=strategy.latency.stage_budgets.market_data,
        refresh_s=universe.refresh_interval_s,
        products_ttl_s=universe.products_cache_minutes * 60,
        monitor_s=executor.worker.monitor_interval_s,
        max_trades_per_hour=executor.risk.max_trades_per_hour,
        readiness_s=float(probes["periodSeconds"]),
        limits={name: pool.rate for name, pool in limits.pools.items()},
        bursts={name: pool.burst for name, pool in limits.pools.items()},
        granted_share=1 - limits.safety_margin_pct / 100,
        endpoint_pools={name: tuple(e.pools) for name, e in limits.endpoints.items()},
    )


# -- supply ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisUse:
    """What Redis did between two INFO snapshots."""

    commands: float
    evalsha: float
    evalsha_usec: float
    cpu_s: float
    seconds: float


def redis_counters(info: dict[str, Any]) -> tuple[float, float, float, float]:
    """Commands processed (those run inside scripts included), EVALSHA calls and µs, CPU seconds."""
    evalsha = info.get("cmdstat_evalsha", {})
    cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
    return float(info["total_commands_processed"]), evalsha.get("calls", 0), evalsha.get("usec", 0), cpu


def redis_between(before: dict[str, Any], after: dict[str, Any], seconds: float) -> RedisUse:
    a, b = redis_counters(before), redis_counters(after)
    # the first INFO is itself one command of the interval
    return RedisUse(b[0] - a[0] - 1, b[1] - a[1], b[2] - a[2], b[3] - a[3], seconds)


@dataclass(frozen=True)
class SupplyRow:
    result: Result
    redis: RedisUse

    @property
    def commands_per_decision(self) -> float:
        return self.redis.commands / max(self.redis.evalsha, 1)

    @property
    def usec_per_call(self) -> float:
        return self.redis.evalsha_usec / max(self.redis.evalsha, 1)

    @property
    def cpu_per_1000(self) -> float:
        return self.redis.cpu_s / max(self.redis.evalsha, 1) * 1000

    @property
    def cpu_pct(self) -> float:
        return self.redis.cpu_s / self.redis.seconds * 100


async def sampled(variant: str, ops: Sequence[Op], client: Any) -> SupplyRow:
    """A discarded warm-up, then the measured run between two INFO snapshots of the Redis it lands on."""
    progress(f"  {variant} c{len(ops)} ...")
    await closed_loop(variant, ops, WARMUP_S)
    before, started = await client.info("everything"), time.perf_counter()
    result = await closed_loop(variant, ops, SUPPLY_S)
    after = await client.info("everything")
    return SupplyRow(result, redis_between(before, after, time.perf_counter() - started))


async def supply(redis_url: str, tmp: Path) -> list[SupplyRow]:
    """Decisions/s of one Redis (raw EVALSHA) and of one and two ratelimit replicas, on a pool that never denies."""
    config_dir = write_config(tmp / "supply-config")
    config = load_config(config_dir)
    client = create_redis(redis_url, max_connections=CONCURRENCY)
    replicas: list[ServiceProcess] = []
    try:
        plan = build_plans(config, KeySpace("supply:floor:", "ratelimit"))[ENDPOINT]
        args = script_args(config, plan, cost=1, priority=Priority.CRITICAL, max_wait_us=0)
        sha = await client.script_load(ACQUIRE_LUA)
        rows = [await sampled(FLOOR, [evalsha_op(client, sha, plan.keys, args)] * CONCURRENCY, client)]
        for name in ("replica-1", "replica-2"):
            replicas.append(
                ServiceProcess.start(
                    name, config_dir=config_dir, redis_url=redis_url, key_prefix="supply:", token=TOKEN, log_dir=tmp
                )
            )
        await wait_all_ready(replicas)
        clients = [quota_client(s, config) for s in replicas]
        try:
            rows.append(await sampled(ONE_REPLICA, [take_op(clients[0])] * CONCURRENCY, client))
            two = [take_op(clients[i % 2]) for i in range(CONCURRENCY)]
            rows.append(await sampled(TWO_REPLICAS, two, client))
        finally:
            for quota in clients:
                await quota.aclose()
        return rows
    finally:
        for service in replicas:
            service.stop()
        await client.aclose()


# -- demand ----------------------------------------------------------------------------------------------------


class ReplicaSet:
    """One replica of ratelimit, universe, strategy and executor, each on its own Redis, all on one simulator."""

    def __init__(self, index: int, *, sim_port: int, redis_urls: dict[str, str], env: dict[str, str], logs: Path):
        self.index = index
        ports = {name: free_port() for name in SERVICES} | {"exchange_sim": sim_port}
        self.stacks = {
            name: Stack(ports=ports, redis_url=redis_urls[name], extra_env=env, log_dir=logs / f"set{index}")
            for name in SERVICES
        }

    def url(self, service: str) -> str:
        return self.stacks[service].url(service)

    def start(self) -> ReplicaSet:
        for name, stack in self.stacks.items():
            stack.start([name])
        return self

    def wait_ready(self) -> None:
        for stack in self.stacks.values():
            stack.wait_ready(120)

    def stop(self) -> None:
        for stack in reversed(self.stacks.values()):
            stack.stop()


def add(counts: Counts, key: Key, value: float) -> None:
    counts[key] = counts.get(key, 0.0) + value


def samples(http: httpx.Client, url: str) -> list[tuple[str, dict[str, str], float]]:
    text = http.get(f"{url}/metrics").text
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def scrape(http: httpx.Client, sim_url: str, sets: Sequence[ReplicaSet]) -> tuple[Counts, dict[int, float]]:
    """The counters of the simulator and of every service; the executors' open positions (a gauge) apart."""
    counts: Counts = {}
    positions: dict[int, float] = {}
    for endpoint, tally in http.get(f"{sim_url}/sim/stats").json()["endpoints"].items():
        counts[("sim", endpoint)] = tally.get("requests", 0)
        counts[("sim429", endpoint)] = tally.get("rate_limited", 0)
    for rs in sets:
        for service in SERVICES:
            for name, labels, value in samples(http, rs.url(service)):
                if name == "trader_rate_limiter_requests_total":
                    add(counts, ("decisions", rs.index, labels["endpoint"], labels["decision"]), value)
                elif name == "trader_exchange_requests_total":
                    add(counts, ("calls", service, rs.index, labels["endpoint"]), value)
                elif name == "trader_cycles_total":
                    add(counts, ("cycles", labels["result"]), value)
                elif name == "trader_universe_build_seconds_count":
                    add(counts, ("builds", rs.index), value)
                elif name == "trader_open_positions":
                    positions[rs.index] = value
    return counts, positions


def redis_snapshot(clients: dict[str, redis.Redis]) -> dict[str, dict[str, Any]]:
    return {name: client.info("everything") for name, client in clients.items()}


def evaluated(http: httpx.Client, sets: Sequence[ReplicaSet]) -> float:
    return sum(
        value
        for rs in sets
        for name, labels, value in samples(http, rs.url("strategy"))
        if name == "trader_cycles_total" and labels.get("result") == "evaluated"
    )


def wait_evaluated(http: httpx.Client, sets: Sequence[ReplicaSet], target: float, timeout_s: float) -> None:
    """Poll the strategies until `target` cycles have been evaluated (a new candle each)."""
    deadline = time.monotonic() + timeout_s
    while evaluated(http, sets) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {target:.0f} evaluated strategy cycles after {timeout_s:.0f} s")
        time.sleep(0.1)


def pick(counts: Counts, *pattern: Any) -> float:
    """The sum of the counts whose key matches the pattern (None matches anything)."""
    return sum(
        v
        for k, v in counts.items()
        if len(k) == len(pattern) and all(p is None or p == x for p, x in zip(pattern, k, strict=True))
    )


@dataclass
class Window:
    """BARS bars of the stack: the counters' increase between an evaluated cycle and the BARS-th after it."""

    products: int
    replicas: int
    seconds: float
    delta: Counts
    redis: dict[str, RedisUse]
    positions: float

    def count(self, *pattern: Any) -> float:
        return pick(self.delta, *pattern)

    def rate(self, *pattern: Any) -> float:
        return self.count(*pattern) / self.seconds


def measure_window(
    http: httpx.Client, sim_url: str, sets: Sequence[ReplicaSet], clients: dict[str, redis.Redis], products: int
) -> Window:
    progress(f"  window: N={products}, M={len(sets)}, {BARS} bars ...")
    bar_real_s = 300 / SIM_SPEED
    start = evaluated(http, sets) + 1
    wait_evaluated(http, sets, start, 6 * bar_real_s)
    # HTTP first, then Redis at the start; Redis first at the end: the scrapes' own Redis reads stay outside
    before, _ = scrape(http, sim_url, sets)
    redis_before, started = redis_snapshot(clients), time.monotonic()
    wait_evaluated(http, sets, start + BARS, (BARS + 4) * bar_real_s)
    redis_after, seconds = redis_snapshot(clients), time.monotonic() - started
    after, positions = scrape(http, sim_url, sets)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after.keys() | before.keys()}
    use = {name: redis_between(redis_before[name], redis_after[name], seconds) for name in clients}
    return Window(products, len(sets), seconds, delta, use, sum(positions.values()))


def cycle_reports(client: redis.Redis, prefix: str, since: float) -> list[tuple[int, float]]:
    """(universe size, market_data stage seconds) of the evaluated cycles that started after `since`."""
    found = []
    for raw in client.lrange(f"{prefix}strategy:cycles", 0, -1):
        report = orjson.loads(raw)
        if report["result"] == "evaluated" and report["started_at"] >= since:
            found.append((report["universe_size"], report["stage_seconds"].get("market_data", 0.0)))
    return found


def probe_calls(http: httpx.Client, sim_url: str, sets: Sequence[ReplicaSet]) -> dict[str, float]:
    """Exchange calls per GET /readyz of each service that the services' exchange clients did not make."""
    per_probe = {}
    for service in SERVICES:
        before, _ = scrape(http, sim_url, sets)
        for _ in range(PROBES):
            http.get(f"{sets[0].url(service)}/readyz")
        after, _ = scrape(http, sim_url, sets)
        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
        # a call of a service's exchange client can land between the two scrapes: never below zero
        unquoted = pick(delta, "sim", None) - pick(delta, "calls", None, None, None)
        per_probe[service] = max(unquoted, 0) / PROBES
    return per_probe


@dataclass
class Demand:
    windows: list[Window]
    stage_points: list[tuple[int, float]]
    probes: dict[str, float]
    sizes: dict[int, int]


def run_demand(servers: dict[str, RedisServer], tmp: Path) -> Demand:
    """For each N: one replica set, a window; a second set, another window; then everything stopped."""
    urls = {name: server.url for name, server in servers.items()}
    clients = {name: redis.Redis.from_url(urls[name]) for name in REDIS_NAMES}
    sim_port = free_port()
    sim = Stack(
        ports={name: free_port() for name in CONTRACT_PORTS} | {"exchange_sim": sim_port},
        redis_url=urls["exchange_sim"],
        extra_env={"SIM_SPEED": str(SIM_SPEED), "LOG_LEVEL": "WARNING"},
        log_dir=tmp / "logs" / "sim",
    )
    windows: list[Window] = []
    stage_points: list[tuple[int, float]] = []
    probes: dict[str, float] = {}
    sizes: dict[int, int] = {}
    http = httpx.Client(timeout=10)
    try:
        sim.start(["exchange_sim"])
        sim.wait_ready(120)
        sim_url = sim.url("exchange_sim")
        for products in PRODUCTS:
            prefix = f"scaling:n{products}:"
            env = {
                "KEY_PREFIX": prefix,
                "LOG_LEVEL": "WARNING",
                "STRATEGY__CYCLE_INTERVAL_S": f"{BENCH_CYCLE_S:g}",
                "UNIVERSE__REFRESH_INTERVAL_S": f"{BENCH_REFRESH_S:g}",
                "UNIVERSE__MAX_PRODUCTS": str(products),
            }
            sets: list[ReplicaSet] = []
            try:
                progress(f"demand: N={products}: starting replica set 1 ...")
                sets.append(ReplicaSet(1, sim_port=sim_port, redis_urls=urls, env=env, logs=tmp / "logs").start())
                sets[0].wait_ready()
                wait_evaluated(http, sets, 1, 60)
                sizes[products] = http.get(f"{sets[0].url('universe')}/v1/universe").json()["size"]
                since = time.time()
                windows.append(measure_window(http, sim_url, sets, clients, sizes[products]))
                progress(f"demand: N={products}: starting replica set 2 ...")
                sets.append(ReplicaSet(2, sim_port=sim_port, redis_urls=urls, env=env, logs=tmp / "logs").start())
                sets[1].wait_ready()
                windows.append(measure_window(http, sim_url, sets, clients, sizes[products]))
                stage_points += cycle_reports(clients["strategy"], prefix, since)
                if products == PRODUCTS[-1]:
                    probes = probe_calls(http, sim_url, sets)
            finally:
                for rs in reversed(sets):
                    rs.stop()
                for name in SERVICES:  # the simulator's market stays
                    clients[name].flushall()
    finally:
        sim.stop()
        http.close()
        for client in clients.values():
            client.close()
    return Demand(windows, stage_points, probes, sizes)


# -- the model -------------------------------------------------------------------------------------------------


def fit(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Least-squares coefficients of ys on the columns of rows."""
    solution, *_ = np.linalg.lstsq(np.asarray(rows, dtype=float), np.asarray(ys, dtype=float), rcond=None)
    return [float(c) for c in solution]


@dataclass(frozen=True)
class Inputs:
    """Per-event figures measured on the stack, which the model multiplies by the events' rates at 1x."""

    candles_per_product_bar: float
    server_time_per_cycle: float
    bba_per_build: float
    list_products: float
    exec_bba_per_replica_s: float
    exec_other_calls: float
    probes: dict[str, float]
    rl_per_decision: float
    strategy: list[float]  # Redis commands per candle call, per cycle, per follower-second
    universe: list[float]  # per build, per evaluated cycle
    executor_per_replica_s: float
    sim_per_call: float
    stage: list[float]  # market_data stage seconds: intercept, per product
    decisions: float
    calls: float


def inputs_from(demand: Demand) -> Inputs:
    ws = demand.windows
    strategy_rows = [
        [w.count("calls", "strategy", None, "get_candles"), w.count("cycles", None), (w.replicas - 1) * w.seconds]
        for w in ws
    ]
    universe_rows = [[w.count("builds", None), w.count("cycles", "evaluated")] for w in ws]
    points = demand.stage_points or [(0, 0.0)]
    return Inputs(
        candles_per_product_bar=sum(w.count("calls", "strategy", None, "get_candles") for w in ws)
        / sum(w.products * w.count("cycles", "evaluated") for w in ws),
        server_time_per_cycle=sum(w.count("calls", "strategy", None, "server_time") for w in ws)
        / sum(w.count("cycles", None) for w in ws),
        bba_per_build=sum(w.count("calls", "universe", None, "best_bid_ask") for w in ws)
        / max(sum(w.count("builds", None) for w in ws), 1),
        list_products=sum(w.count("sim", "list_products") for w in ws),
        exec_bba_per_replica_s=sum(w.count("calls", "executor", None, "best_bid_ask") for w in ws)
        / sum(w.replicas * w.seconds for w in ws),
        exec_other_calls=sum(
            w.count("calls", "executor", None, None) - w.count("calls", "executor", None, "best_bid_ask") for w in ws
        ),
        probes=demand.probes,
        rl_per_decision=sum(w.redis["ratelimit"].commands for w in ws)
        / sum(w.count("decisions", None, None, None) for w in ws),
        strategy=fit(strategy_rows, [w.redis["strategy"].commands for w in ws]),
        universe=fit(universe_rows, [w.redis["universe"].commands for w in ws]),
        executor_per_replica_s=sum(w.redis["executor"].commands for w in ws) / sum(w.replicas * w.seconds for w in ws),
        sim_per_call=sum(w.redis["exchange_sim"].commands for w in ws) / sum(w.count("sim", None) for w in ws),
        stage=fit([[1.0, n] for n, _ in points], [s for _, s in points]),
        decisions=sum(w.count("decisions", None, None, None) for w in ws),
        calls=sum(w.count("calls", None, None, None) for w in ws),
    )


@dataclass(frozen=True)
class Load:
    """What N products and M replica sets ask per second at 1x."""

    decisions: float
    candles: float
    private: float
    public_quota: float
    probes: float
    products: float
    redis: float
    per_replica: float
    fetch_s: float


def model(n: float, m: int, x: Inputs, d: Defaults) -> Load:
    candles = x.candles_per_product_bar * n / d.bar_s
    server_time = x.server_time_per_cycle / d.cycle_s
    builds = m / d.refresh_s
    lists = 1 / d.products_ttl_s
    watch = m / d.monitor_s  # the worst case: a position open all the time
    trades = d.max_trades_per_hour / 3600
    private = candles + x.bba_per_build * builds + watch + trades * ORDER_PRIVATE_CALLS
    public_quota = server_time + lists + trades * ORDER_PUBLIC_CALLS
    decisions = private + public_quota
    per_candle, per_cycle, per_follower_s = x.strategy
    per_build, per_evaluation = x.universe
    redis_cmds = (
        x.rl_per_decision * decisions
        + per_candle * candles
        + per_cycle / d.cycle_s
        + per_follower_s * (m - 1) * BENCH_CYCLE_S / d.cycle_s  # a follower asks for the lease 4 times a cycle
        + per_build * builds
        + per_evaluation / d.bar_s
        + x.executor_per_replica_s * m
    )
    fit_s = x.stage[0] + x.stage[1] * n
    quota_s = max(n - d.bursts["private"], 0) / d.granted("private")
    return Load(
        decisions=decisions,
        candles=candles,
        private=private,
        public_quota=public_quota,
        probes=sum(x.probes.values()) * m / d.readiness_s,
        products=lists,
        redis=redis_cmds,
        per_replica=decisions / m,
        fetch_s=max(fit_s, quota_s),
    )


# -- the report ------------------------------------------------------------------------------------------------


def pct(value: float, limit: float) -> str:
    share = value / limit * 100
    return f"{share:.3f} %" if share < 0.01 else f"{share:.2f} %" if share < 10 else f"{share:.0f} %"


def num(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def supply_table(rows: Sequence[SupplyRow]) -> list[str]:
    lines = [
        "| variant | concurrency | decisions/s | p50 ms | p99 ms | Redis commands / decision | EVALSHA µs/call "
        "(commandstats) | Redis CPU s / 1,000 decisions | Redis CPU, % of a core |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        r = row.result
        lines.append(
            f"| {r.variant} | {r.concurrency} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{row.commands_per_decision:.1f} | {row.usec_per_call:.1f} | {row.cpu_per_1000:.3f} | {row.cpu_pct:.0f} |"
        )
    return lines


def pool_decisions(w: Window, d: Defaults, pool: str) -> float:
    return sum(w.rate("decisions", None, e, None) for e, pools in d.endpoint_pools.items() if pool in pools)


def demand_tables(ws: Sequence[Window], d: Defaults) -> list[str]:
    named = ("get_candles", "server_time", "best_bid_ask", "list_products")
    lines = [
        "Quota decisions and exchange calls per second, at 60x (decisions from each ratelimit replica's "
        "`/metrics`, calls from the simulator's `/sim/stats`):",
        "",
        "| N | M | window s | decisions/s (by replica) | public | private | products | get_candles | server_time "
        "| best_bid_ask | list_products | other calls | 429s |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in ws:
        by_replica = " / ".join(num(w.rate("decisions", i, None, None), 1) for i in range(1, w.replicas + 1))
        other = w.rate("sim", None) - sum(w.rate("sim", e) for e in named)
        lines.append(
            f"| {w.products} | {w.replicas} | {w.seconds:.1f} | {num(w.rate('decisions', None, None, None), 1)} "
            f"({by_replica}) | {num(pool_decisions(w, d, 'public'))} | {num(pool_decisions(w, d, 'private'))} | "
            f"{num(pool_decisions(w, d, 'products'))} | "
            + " | ".join(num(w.rate("sim", e)) for e in named)
            + f" | {num(other)} | {w.count('sim429', None):.0f} |"
        )
    lines += [
        "",
        "Redis commands per second by the service that sent them (each service on a Redis server of its own; "
        "commands run inside Lua scripts count, as Redis 7's `total_commands_processed` counts them), at 60x:",
        "",
        "| N | M | ratelimit | strategy | universe | executor | stack, one Redis | its CPU, % of a core "
        "| simulator (own Redis) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in ws:
        stack = [w.redis[s] for s in SERVICES]
        cpu = sum(u.cpu_s for u in stack) / w.seconds * 100
        lines.append(
            f"| {w.products} | {w.replicas} | "
            + " | ".join(num(u.commands / w.seconds, 0) for u in stack)
            + f" | {num(sum(u.commands for u in stack) / w.seconds, 0)} | {cpu:.1f} | "
            f"{num(w.redis['exchange_sim'].commands / w.seconds, 0)} |"
        )
    lines += [
        "",
        "Per product and per replica, expressed at 1x (candles scaled by 1/SIM_SPEED; the rest counted per event):",
        "",
        "| N | M | cycles evaluated / all | candle calls / product / min at 1x | server_time per cycle "
        "| universe builds | best_bid_ask per build | executor best_bid_ask / replica / s | open positions at end |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for w in ws:
        candles = w.count("calls", "strategy", None, "get_candles")
        cycles = w.count("cycles", None)
        builds = w.count("builds", None)
        lines.append(
            f"| {w.products} | {w.replicas} | {w.count('cycles', 'evaluated'):.0f} / {cycles:.0f} | "
            f"{candles / w.products / w.seconds * 60 / SIM_SPEED:.3f} | "
            f"{w.count('calls', 'strategy', None, 'server_time') / max(cycles, 1):.2f} | {builds:.0f} | "
            f"{w.count('calls', 'universe', None, 'best_bid_ask') / max(builds, 1):.2f} | "
            f"{w.count('calls', 'executor', None, 'best_bid_ask') / (w.replicas * w.seconds):.2f} | "
            f"{w.positions:.0f} |"
        )
    return lines


def inputs_table(x: Inputs, d: Defaults, supply_rows: Sequence[SupplyRow]) -> list[str]:
    floor, one, two = supply_rows
    probes = " / ".join(f"{x.probes.get(s, math.nan):.2f}" for s in ("universe", "strategy", "executor", "ratelimit"))
    per_set = sum(x.probes.values())
    trades = d.max_trades_per_hour / 60
    s_candle, s_cycle, s_follow = x.strategy
    u_build, u_eval = x.universe
    burst = d.bursts["private"]
    return [
        "| input | measured | follows | at 1x, committed config |",
        "|---|---:|---|---:|",
        f"| get_candles calls per product per new {d.bar_s // 60}-min candle | {x.candles_per_product_bar:.3f} | "
        f"simulated time (a bar is {d.bar_s} s simulated, {d.bar_s / SIM_SPEED:g} s here) | "
        f"{x.candles_per_product_bar * 60 / d.bar_s:.3f} per product per min |",
        f"| server_time calls per strategy cycle | {x.server_time_per_cycle:.3f} | real time: one cycle per "
        f"cycle_interval_s ({BENCH_CYCLE_S:g} s here, {d.cycle_s:g} s committed), leader only | "
        f"{x.server_time_per_cycle * 60 / d.cycle_s:.2f} per min |",
        f"| best_bid_ask calls per universe build | {x.bba_per_build:.3f} | real time: refresh_interval_s "
        f"({BENCH_REFRESH_S:g} s here, {d.refresh_s:g} s committed), every universe replica | "
        f"{x.bba_per_build * 60 / d.refresh_s:.2f} per replica per min |",
        f"| list_products calls, all windows | {x.list_products:.0f} | real time: one per product-list TTL "
        f"({d.products_ttl_s / 60:g} min) for all replicas (bench/universe.py) | {60 / d.products_ttl_s:.2f} per min |",
        f"| executor best_bid_ask per replica-second | {x.exec_bba_per_replica_s:.3f} | real time: one per "
        f"monitor_interval_s ({d.monitor_s:g} s) per executor replica while a position is open | "
        f"{60 / d.monitor_s:.0f} per replica per min (worst case: always a position) |",
        f"| executor order-path calls, all windows | {x.exec_other_calls:.0f} | real time: at most "
        f"max_trades_per_hour ({d.max_trades_per_hour}) trades, {ORDER_PRIVATE_CALLS} private + "
        f"{ORDER_PUBLIC_CALLS} public calls each (orders.py) | {trades * ORDER_PRIVATE_CALLS:.2f} private + "
        f"{trades * ORDER_PUBLIC_CALLS:.2f} public per min |",
        f"| exchange calls per GET /readyz: universe / strategy / executor / ratelimit | {probes} | real time: "
        f"the helm chart probes /readyz every {d.readiness_s:g} s per pod; these calls take no quota "
        "(compose and `make run` probe /healthz: none) | "
        f"{per_set * 60 / d.readiness_s:.0f} per replica set per min |",
        f"| quota decisions / exchange calls by the services' clients, all windows | "
        f"{x.decisions:,.0f} / {x.calls:,.0f} | | |",
        f"| ratelimit Redis commands per quota decision | {x.rl_per_decision:.2f} | with the decisions | |",
        f"| strategy Redis commands per candle call / per cycle / per follower-second | {s_candle:.2f} / "
        f"{s_cycle:.2f} / {s_follow:.2f} (fit) | simulated / real (cycle interval) / real (cycle interval) | |",
        f"| universe Redis commands per build / per evaluated cycle | {u_build:.2f} / {u_eval:.2f} (fit) | "
        "real (refresh interval) / simulated | |",
        f"| executor Redis commands per replica-second | {x.executor_per_replica_s:.2f} | real time | |",
        f"| simulator Redis commands per exchange call (its own Redis, not in a live stack) | {x.sim_per_call:.2f} "
        "| | |",
        f"| market_data stage of an evaluated cycle (the candles at a bar close): a + b x N | "
        f"{x.stage[0]:.3f} + {x.stage[1]:.4f} N s (fit over the windows' cycles) | real time: the private "
        f"pool grants {d.granted('private'):g}/s after a burst of {burst}: at least (N - {burst}) / "
        f"{d.granted('private'):g} s | budget {d.market_data_budget_s:g} s |",
        f"| one Redis: raw EVALSHA decisions/s (c{CONCURRENCY}) / commands/s | {floor.result.rate:,.0f} / "
        f"{floor.result.rate * floor.commands_per_decision:,.0f} | the load generator shares the 2 cores; "
        f"Redis alone: about {1000 / floor.cpu_per_1000:,.0f} decisions/s of CPU | |",
        f"| one ratelimit replica: decisions/s through the QuotaClient (c{CONCURRENCY}); two | "
        f"{one.result.rate:,.0f}; {two.result.rate:,.0f} | | |",
    ]


RESOURCES = ("private", "public", "products", "redis", "ratelimit", "fetch")
RESOURCE_NAMES = {
    "private": "private pool",
    "public": "public pool",
    "products": "products budget",
    "redis": "Redis",
    "ratelimit": "ratelimit replica",
    "fetch": "candle fetch vs market_data budget",
}


def shares(load: Load, d: Defaults, redis_cap: float, replica_cap: float) -> dict[str, float]:
    """Each resource's use as a fraction of its limit (Coinbase's figures for the exchange's pools)."""
    return {
        "private": load.private / d.limits["private"],
        "public": (load.public_quota + load.probes) / d.limits["public"],
        "products": load.products / d.limits["products"],
        "redis": load.redis / redis_cap,
        "ratelimit": load.per_replica / replica_cap,
        "fetch": load.fetch_s / d.market_data_budget_s,
    }


def model_table(x: Inputs, d: Defaults, redis_cap: float, replica_cap: float) -> list[str]:
    lines = [
        "| N | M | quota decisions/s | private calls/s (of 30/s) | public calls/s, quota + probes (of 10/s) "
        "| products (of 1/s) | Redis commands/s (of one Redis) | decisions/s per ratelimit replica (of one) "
        "| candle fetch at each bar close, s (of the 5 s budget) | closest to its limit |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in MODEL_REPLICAS:
        for n in MODEL_PRODUCTS:
            load = model(n, m, x, d)
            use = shares(load, d, redis_cap, replica_cap)
            top = max(use, key=lambda k: use[k])
            lines.append(
                f"| {n:,} | {m} | {num(load.decisions)} | "
                f"{num(load.private)} ({pct(load.private, d.limits['private'])}) | "
                f"{num(load.public_quota)} + {num(load.probes)} "
                f"({pct(load.public_quota + load.probes, d.limits['public'])}) | {num(load.products, 3)} "
                f"({pct(load.products, d.limits['products'])}) | {num(load.redis, 0)} ({pct(load.redis, redis_cap)}) "
                f"| {num(load.per_replica)} ({pct(load.per_replica, replica_cap)}) | {num(load.fetch_s, 1)} "
                f"({pct(load.fetch_s, d.market_data_budget_s)}) | {RESOURCE_NAMES[top]} ({use[top] * 100:.0f} %) |"
            )
    return lines


def crossing(value: Callable[[float], float], limit: float) -> float:
    """The N at which a quantity linear in N reaches `limit` (inf when it does not grow)."""
    at0, slope = value(0), value(1) - value(0)
    if at0 >= limit:
        return 0.0
    return (limit - at0) / slope if slope > 1e-12 else math.inf


def products_at(n: float, note: str = "") -> str:
    if math.isinf(n):
        return f"never: does not grow with N{note}"
    text = f"{n:,.0f}"
    return f"{text} (above max_products' cap of {MAX_PRODUCTS_CAP:,})" if n > MAX_PRODUCTS_CAP else text


def limits_row(m: int, x: Inputs, d: Defaults, redis_cap: float, replica_cap: float) -> str:
    """For M replica sets, the N at which each resource reaches its limit, and the first of them."""

    def at(n: float) -> Load:
        return model(n, m, x, d)

    fit_n = crossing(lambda n: x.stage[0] + x.stage[1] * n, d.market_data_budget_s)
    quota_n = d.market_data_budget_s * d.granted("private") + d.bursts["private"]
    found = {
        "candle fetch over its budget": min(fit_n, quota_n),
        "private pool (granted rate)": crossing(lambda n: at(n).private, d.granted("private")),
        "private pool (30/s)": crossing(lambda n: at(n).private, d.limits["private"]),
        "public pool": crossing(lambda n: at(n).public_quota + at(n).probes, d.limits["public"]),
        "Redis": crossing(lambda n: at(n).redis, redis_cap),
        "ratelimit replica": crossing(lambda n: at(n).per_replica, replica_cap),
    }
    public = at(0)
    public_note = f" ({pct(public.public_quota + public.probes, d.limits['public'])} at any N)"
    first = min(found, key=lambda k: found[k])
    cells = [products_at(v, public_note if name == "public pool" else "") for name, v in found.items()]
    return f"| {m} | " + " | ".join(cells) + f" | {first}, at N = {found[first]:,.0f} |"


def limits_table(x: Inputs, d: Defaults, redis_cap: float, replica_cap: float) -> list[str]:
    lines = [
        f"| M | candle fetch over the {d.market_data_budget_s:g} s market_data budget | private pool at the "
        f"{d.granted('private'):g}/s it is granted at | private pool at Coinbase's 30/s | public pool at 10/s "
        "| one Redis full | one ratelimit replica full | first |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for m in MODEL_REPLICAS:
        lines.append(limits_row(m, x, d, redis_cap, replica_cap))
    return lines


def log_problems(folder: Path, limit: int = 8) -> list[str]:
    """Warnings, errors and tracebacks the services logged, counted per message."""
    counted: dict[str, int] = {}
    for path in sorted(folder.rglob("*.log")):
        for line in path.read_bytes().splitlines():
            if any(marker in line.replace(b" ", b"") for marker in LOG_MARKERS):
                key = f"{path.parent.name}/{path.stem}: {shorten(line)[:160]}"
                counted[key] = counted.get(key, 0) + 1
    ranked = sorted(counted.items(), key=lambda item: -item[1])
    return [f"- {n} x {text}" for text, n in ranked[:limit]] + (
        [f"- ... {len(ranked) - limit} other messages"] if len(ranked) > limit else []
    )


def report(
    supply_rows: Sequence[SupplyRow], demand: Demand, d: Defaults, tmp: Path, loads: tuple[float, float], took: float
) -> str:
    x = inputs_from(demand)
    floor, one, _ = supply_rows
    redis_cap = floor.result.rate * floor.commands_per_decision
    replica_cap = one.result.rate
    limited = sum(w.count("sim429", None) for w in demand.windows)
    sizes = ", ".join(f"{n} -> {size}" for n, size in demand.sizes.items())
    return "\n".join(
        [
            "",
            "## Scaling on paper",
            "",
            f"Machine: {os.cpu_count()} cores, shared by the load generator, the services and the Redis servers"
            f" (1-min load average {loads[0]:.2f} before the run, {loads[1]:.2f} after): compare figures within"
            " one run.",
            "",
            "### Supply: what one ratelimit replica and one Redis serve",
            "",
            *supply_table(supply_rows),
            "",
            f"Each row: {WARMUP_S:g} s warm-up, then {SUPPLY_S:g} s; one pool that never denies "
            "(bench/service.py), so the decision is measured, not the limit; Redis figures are the INFO deltas of "
            "the measured seconds on a private redis-server.",
            "",
            f"### Demand: the real stack at SIM_SPEED {SIM_SPEED}",
            "",
            f"Universe sizes asked -> served (UNIVERSE__MAX_PRODUCTS): {sizes}. Each window runs from an evaluated "
            f"cycle to the {BARS}th after it ({BARS} bars); strategy cycle every {BENCH_CYCLE_S:g} s, universe build "
            f"every {BENCH_REFRESH_S:g} s per replica; M = 2 adds a second replica of ratelimit, universe, strategy "
            "and executor on the same Redis and simulator (each set's services ask their own ratelimit replica; "
            "only the strategy leader runs cycles).",
            "",
            *demand_tables(demand.windows, d),
            "",
            "### The model's inputs",
            "",
            *inputs_table(x, d, supply_rows),
            "",
            "### The model: N products, M replica sets, at 1x with the committed configuration",
            "",
            *model_table(x, d, redis_cap, replica_cap),
            "",
            f"Private: candles, one best_bid_ask per universe build per replica, the executors' position watch "
            f"(worst case, a position always open) and orders at max_trades_per_hour. Public: server_time, "
            f"list_products, get_product, plus the helm chart's readiness probes (one /time per probe of universe, "
            f"strategy and executor every {d.readiness_s:g} s, not through the quota). Redis: the per-event "
            f"commands above at 1x rates, against one Redis's {redis_cap:,.0f} commands/s measured in (a). "
            f"Ratelimit: decisions spread evenly over M replicas, against (b)'s {replica_cap:,.0f}/s. Candle fetch: "
            f"the larger of the measured fit and the quota bound (N - {d.bursts['private']}) / "
            f"{d.granted('private'):g} s, at every bar close.",
            "",
            "### Where each limit is reached (N products)",
            "",
            *limits_table(x, d, redis_cap, replica_cap),
            "",
            "### Problems",
            "",
            f"- exchange 429s in the windows: {limited:.0f}",
            *(log_problems(tmp / "logs") or ["- nothing logged at warning or above"]),
            "",
            f"Run took {took:.0f} s.",
        ]
    )


def main() -> None:
    """Run supply, then demand, and print the report."""
    started = time.monotonic()
    load_before = os.getloadavg()[0]
    defaults = load_defaults()
    with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        servers = {
            name: RedisServer(port=free_port(), data_dir=tmp / "redis" / name, aof=False) for name in REDIS_NAMES
        }
        try:
            for server in servers.values():
                server.start()
            progress(f"bench.scaling: supply on redis-server :{servers['ratelimit'].port}")
            supply_rows = uvloop.run(supply(servers["ratelimit"].url, tmp))
            with redis.Redis.from_url(servers["ratelimit"].url) as client:
                client.flushall()
            demand = run_demand(servers, tmp)
        finally:
            for server in servers.values():
                server.stop()
        text = report(supply_rows, demand, defaults, tmp, (load_before, os.getloadavg()[0]), time.monotonic() - started)
    print(text)


if __name__ == "__main__":
    main()
