"""Benchmark of the quota path: raw EVALSHA floor, the `limits` library, the service under wrk and
through QuotaClient, and two replicas; prints one markdown table. Run: `python -m bench.ratelimit`."""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import limits
import orjson
import uvloop
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter, RateLimiter, SlidingWindowCounterRateLimiter
from prometheus_client import CollectorRegistry
from redis.asyncio import ConnectionPool, Redis

from bench import wrk
from bench.measure import Op, Result, measure
from bench.service import ENDPOINT, ServiceProcess, load_config, wait_all_ready, write_config
from services.ratelimit.gcra import ACQUIRE_LUA, Code, build_plans, script_args
from shared.http import create_http_client
from shared.quota import QuotaClient, QuotaDenied
from shared.ratelimits import Priority, RateLimitConfig
from shared.redis import KeySpace, create_redis
from shared.settings import DEV_API_TOKEN

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TOKEN = DEV_API_TOKEN
CONCURRENCIES = (1, 64)
WARMUP_S = 1.0
DURATION_S = 4.0
WRK_DURATION_S = 5
POOL_SIZE = 64

FLOOR = "(a) raw EVALSHA acquire.lua"
LIMITS_MOVING = "(b) limits moving-window"
LIMITS_SLIDING = "(b) limits sliding-window-counter"
SERVICE_WRK = "(c) service, wrk"
SERVICE_CLIENT = "(d) service, QuotaClient"
HTTPX_DEFAULT = "(d) service, default httpx.AsyncClient"
HTTPX_TUNED = "(d) service, httpx with the stack's pool settings"
REPLICAS_WRK = "(e) 2 replicas, 2x wrk -c32"
REPLICAS_CLIENT = "(e) 2 replicas, QuotaClient 2x32"


def progress(message: str) -> None:
    """A progress line on stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


async def timed(variant: str, ops: Sequence[Op]) -> Result:
    """Warm up, measure, and log the row."""
    progress(f"  {variant} c{len(ops)} ...")
    return await measure(variant, ops, warmup_s=WARMUP_S, duration_s=DURATION_S)


def evalsha_op(redis: Redis, sha: str, keys: tuple[str, ...], args: list[str]) -> Op:
    """One EVALSHA of acquire.lua; granted when the reply's code is GRANTED."""

    async def op() -> bool:
        reply = await redis.evalsha(sha, len(keys), *keys, *args)
        return reply[0] == Code.GRANTED

    return op


async def bench_floor(redis: Redis, config: RateLimitConfig, prefix: str) -> list[Result]:
    """(a) redis-py EVALSHA of the service's script, with the service's arguments for one endpoint."""
    plan = build_plans(config, KeySpace(f"{prefix}floor:", "ratelimit"))[ENDPOINT]
    args = script_args(config, plan, cost=1, priority=Priority.CRITICAL, max_wait_us=0)
    sha = await redis.script_load(ACQUIRE_LUA)
    op = evalsha_op(redis, sha, plan.keys, args)
    return [await timed(FLOOR, [op] * c) for c in CONCURRENCIES]


def hit_op(limiter: RateLimiter) -> Op:
    """One `hit()` of a 1,000,000/second limit on the benchmark's endpoint."""
    item = RateLimitItemPerSecond(1_000_000)

    async def op() -> bool:
        return await limiter.hit(item, ENDPOINT)

    return op


async def bench_limits(prefix: str) -> list[Result]:
    """(b) the `limits` library's moving-window and sliding-window-counter strategies on the same Redis."""
    pool = ConnectionPool.from_url(REDIS_URL, max_connections=POOL_SIZE)
    storage = RedisStorage(
        f"async+{REDIS_URL}", implementation="redispy", key_prefix=f"{prefix}limits", connection_pool=pool
    )
    results = []
    try:
        for variant, strategy in (
            (LIMITS_MOVING, MovingWindowRateLimiter),
            (LIMITS_SLIDING, SlidingWindowCounterRateLimiter),
        ):
            op = hit_op(strategy(storage))
            results += [await timed(variant, [op] * c) for c in CONCURRENCIES]
    finally:
        await pool.disconnect()
    return results


def wrk_result(variant: str, connections: int, runs: Sequence[wrk.WrkStats]) -> Result:
    """A row from one or more simultaneous wrk runs: rates add up, latencies are the worst run's."""
    errors = {}
    non_2xx = sum(run.non_2xx for run in runs)
    if non_2xx:
        errors["non-2xx responses (wrk)"] = non_2xx
    for run in runs:
        if run.socket_errors:
            errors[f"socket errors (wrk): {run.socket_errors}"] = 1
    return Result(
        variant=variant,
        concurrency=connections,
        rate=sum(run.rate for run in runs),
        p50_ms=max(run.p50_ms for run in runs),
        p99_ms=max(run.p99_ms for run in runs),
        errors=errors,
    )


async def wrk_together(urls: Sequence[str], script: Path, *, connections: int, duration_s: int) -> list[wrk.WrkStats]:
    """One wrk per URL, all at once."""
    return list(
        await asyncio.gather(*(wrk.run(url, script, connections=connections, duration_s=duration_s) for url in urls))
    )


async def bench_wrk(variant: str, services: Sequence[ServiceProcess], script: Path, total: int) -> Result:
    """wrk against every service at once, `total` connections split evenly, after a 1 s warm-up."""
    progress(f"  {variant} c{total} ...")
    urls = [f"{s.url}/v1/acquire" for s in services]
    per_service = total // len(services)
    await wrk_together(urls, script, connections=per_service, duration_s=1)
    runs = await wrk_together(urls, script, connections=per_service, duration_s=WRK_DURATION_S)
    return wrk_result(variant, total, runs)


def take_op(client: QuotaClient) -> Op:
    """One `take()`; a denial is False, a grant from the local fallback is an error."""

    async def op() -> bool:
        try:
            grant = await client.take(ENDPOINT)
        except QuotaDenied:
            return False
        if grant.fallback:
            raise RuntimeError("granted by the local fallback limiter: the service was out of reach")
        return True

    return op


def quota_client(service: ServiceProcess, config: RateLimitConfig) -> QuotaClient:
    """A QuotaClient for one service, as the other services build it."""
    return QuotaClient(
        base_url=service.url, token=TOKEN, config=config, client_id="bench", registry=CollectorRegistry()
    )


async def bench_clients(
    variant: str, services: Sequence[ServiceProcess], config: RateLimitConfig, concurrency: int
) -> Result:
    """`concurrency` coroutines calling take(), split evenly over one QuotaClient per service."""
    clients = [quota_client(s, config) for s in services]
    try:
        ops = [take_op(clients[i % len(clients)]) for i in range(concurrency)]
        return await timed(variant, ops)
    finally:
        for client in clients:
            await client.aclose()


def post_op(client: httpx.AsyncClient, url: str, body: bytes) -> Op:
    """One POST /v1/acquire through an httpx client; a 429 is a denial."""
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}

    async def op() -> bool:
        response = await client.post(url, content=body, headers=headers)
        if response.status_code not in (200, 429):
            raise RuntimeError(f"acquire answered {response.status_code}")
        return response.status_code == 200

    return op


async def bench_httpx(variant: str, service: ServiceProcess, client: httpx.AsyncClient, concurrency: int) -> Result:
    """The same calls as QuotaClient makes, through httpx: what the quota client would cost on it."""
    body = orjson.dumps({"endpoint": ENDPOINT, "cost": 1})
    try:
        return await timed(variant, [post_op(client, f"{service.url}/v1/acquire", body)] * concurrency)
    finally:
        await client.aclose()


async def delete_keys(redis: Redis, prefix: str) -> int:
    """Delete every key under the benchmark's prefix (never anything else)."""
    deleted = 0
    async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
        deleted += await redis.delete(key)
    return deleted


@dataclass
class Run:
    """Everything the report needs."""

    results: list[Result]
    rss_mib: dict[str, float | None]
    service_log: dict[str, list[str]]
    load_before: float = math.nan


async def bench_services(config_dir: Path, tmp: Path, config: RateLimitConfig, prefix: str) -> Run:
    """(c), (d), (e): two replicas on the same Redis and key prefix; (c) and (d) use the first one."""
    script = wrk.write_script(tmp, body=orjson.dumps({"endpoint": ENDPOINT, "cost": 1}).decode(), token=TOKEN)
    replicas: list[ServiceProcess] = []
    try:
        for name in ("replica-1", "replica-2"):
            replicas.append(
                ServiceProcess.start(
                    name, config_dir=config_dir, redis_url=REDIS_URL, key_prefix=prefix, token=TOKEN, log_dir=tmp
                )
            )
        await wait_all_ready(replicas)
        first = replicas[:1]
        results = [await bench_wrk(SERVICE_WRK, first, script, c) for c in CONCURRENCIES]
        results += [await bench_clients(SERVICE_CLIENT, first, config, c) for c in CONCURRENCIES]
        for c in CONCURRENCIES:
            results.append(await bench_httpx(HTTPX_DEFAULT, first[0], httpx.AsyncClient(), c))
            results.append(await bench_httpx(HTTPX_TUNED, first[0], create_http_client(), c))
        results.append(await bench_wrk(REPLICAS_WRK, replicas, script, 64))
        results.append(await bench_clients(REPLICAS_CLIENT, replicas, config, 64))
        rss = {s.name: s.rss_mib() for s in replicas}
        logs = {s.name: s.log_problems() for s in replicas}
        return Run(results, rss, logs)
    finally:
        for service in replicas:
            service.stop()


async def run_all() -> Run:
    """Every variant in one run; service processes and Redis keys are cleaned up whatever happens."""
    prefix = f"bench:{secrets.token_hex(4)}:"
    load_before = os.getloadavg()[0]
    redis = create_redis(REDIS_URL, max_connections=POOL_SIZE)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp_name:
            tmp = Path(tmp_name)
            config_dir = write_config(tmp / "config")
            config = load_config(config_dir)
            progress(f"bench.ratelimit: Redis {REDIS_URL}, key prefix {prefix}")
            results = await bench_floor(redis, config, prefix)
            results += await bench_limits(prefix)
            run = await bench_services(config_dir, tmp, config, prefix)
            run.results[:0] = results
            run.load_before = load_before
            return run
    finally:
        deleted = await delete_keys(redis, prefix)
        progress(f"deleted {deleted} Redis key(s) under {prefix}")
        await redis.aclose()


def ratio(result: Result, floors: dict[int, float]) -> str:
    """Decisions/s as a multiple of the raw EVALSHA floor at the same concurrency."""
    floor = floors.get(result.concurrency)
    return f"{result.rate / floor:.2f}x" if floor else "n/a"


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def table(results: Sequence[Result]) -> list[str]:
    """The markdown table: one row per variant and concurrency."""
    floors = {r.concurrency: r.rate for r in results if r.variant == FLOOR}
    lines = [
        "| variant | concurrency | decisions/s | p50 ms | p99 ms | vs EVALSHA floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.variant} | {r.concurrency} | {r.rate:,.0f} | {ms(r.p50_ms)} | {ms(r.p99_ms)} | {ratio(r, floors)} |"
        )
    return lines


def find(results: Sequence[Result], variant: str, concurrency: int) -> Result:
    return next(r for r in results if r.variant == variant and r.concurrency == concurrency)


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def targets(results: Sequence[Result]) -> list[str]:
    """The issue's targets and whether this run meets them."""
    wrk64 = find(results, SERVICE_WRK, 64)
    client64 = find(results, SERVICE_CLIENT, 64)
    client1 = find(results, SERVICE_CLIENT, 1)
    return [
        f"- service >= 2,500 decisions/s under wrk (c64): {wrk64.rate:,.0f}/s, {verdict(wrk64.rate >= 2500)}",
        f"- QuotaClient >= 1,000 decisions/s at c64 with p99 <= 50 ms: {client64.rate:,.0f}/s, "
        f"p99 {ms(client64.p99_ms)} ms, {verdict(client64.rate >= 1000 and client64.p99_ms <= 50)}",
        f"- QuotaClient p50 <= 1 ms at c1: {ms(client1.p50_ms)} ms, {verdict(client1.p50_ms <= 1)}",
    ]


def problems(run: Run) -> list[str]:
    """Denials, errors and service log warnings seen during the run."""
    found = []
    for r in run.results:
        if r.denied:
            found.append(f"- {r.variant} c{r.concurrency}: {r.denied} denied")
        found += [f"- {r.variant} c{r.concurrency}: {count} x {error}" for error, count in r.errors.items()]
    for name, lines in run.service_log.items():
        found += [f"- {name} log: {line}" for line in lines]
    return found or ["- none: no denials, no errors, nothing logged at warning or above"]


def report(run: Run) -> str:
    """The whole printed report."""
    cores = os.cpu_count()
    rss = ", ".join(
        f"{name} {mib:.1f} MiB" if mib is not None else f"{name} (exited)" for name, mib in run.rss_mib.items()
    )
    lines = [
        "",
        *table(run.results),
        "",
        f"Machine: {cores} cores shared by the load generator (this process, wrk), the service replicas and Redis; "
        f"every decision hits the same pool key. 1-min load average before the run: {run.load_before:.2f}.",
        f"Each row: {WARMUP_S:.0f} s warm-up, then {DURATION_S:.0f} s (wrk: {WRK_DURATION_S} s); "
        f"in-process clients run on uvloop; limits {limits.__version__} on redis-py, 1,000,000/second.",
        "",
        "Targets:",
        *targets(run.results),
        "",
        f"Service RSS (VmRSS) after the run: {rss}",
        "",
        "Problems:",
        *problems(run),
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the benchmark and print the report."""
    run = uvloop.run(run_all())
    print(report(run))


if __name__ == "__main__":
    main()
