"""The executor against the simulator on loopback: intake rate, and proposal -> filled order latency.

ratelimit, exchange_sim and executor run as real processes (as the Procfile starts them) on free ports under a
key prefix of their own, with risk limits that never reject and a simulator balance that never runs out.

1. Intake: INTAKE_PROPOSALS distinct proposals posted as fast as INTAKE_CONCURRENCY clients can; proposals/s
   accepted (202) and the POST's p50/p99. They queue; the worker then drains them at the pace the exchange's
   limits allow (the stack's quota keeps it there), which is reported too.
2. Latency: once the backlog is drained and the quota's utilization window has passed, LATENCY_PROPOSALS
   proposals one at a time, one every LATENCY_EVERY_S (under the simulator's 10 public and 30 private requests/s:
   each takes one public and three private calls): from the POST until GET /v1/proposals/{id} says `filled`
   (polled every POLL_S), and the executor's own figure, updated_at - received_at.
3. RSS of each service after the run, the simulator's order counts, and every rate limit, rejection or error seen.

Run with `python -m bench.executor` (part of `make bench`). It only prints; nothing is asserted.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import redis

from bench.measure import percentile
from bench.service import ServiceProcess, wait_all_ready
from devtools.redis_server import delete_prefix, redis_answers
from devtools.stack import ROOT
from services.executor.ledger import GROUP
from shared.redis import KeySpace
from shared.settings import DEV_API_TOKEN

REDIS_URL = "redis://127.0.0.1:6379/0"
HEADERS = {"Authorization": f"Bearer {DEV_API_TOKEN}", "Content-Type": "application/json"}
PRODUCTS = ("BTC-USD", "ETH-USD", "SOL-USD")
QUOTE_SIZE = "5"
INTAKE_PROPOSALS = 500
INTAKE_CONCURRENCY = 16
LATENCY_PROPOSALS = 60
LATENCY_EVERY_S = 0.25  # 4 proposals/s: 4 public and 12 private calls/s, well under 10 and 30
POLL_S = 0.002
SETTLE_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 600.0
QUOTA_WINDOW_S = 10.0  # ratelimits.yaml utilization_window_s: the drain's load has left the window after it
TERMINAL = ("filled", "rejected", "exited", "failed")
TARGET_P50_MS = 50.0
TARGET_RSS_MIB = 150.0
# Risk that never rejects. RiskConfig caps max_trades_per_hour at 10,000 (le=10_000): 100,000 is refused at start.
RISK_ENV = {
    "RISK__MAX_TRADES_PER_HOUR": "10000",
    "RISK__MAX_OPEN_POSITIONS": "1000",
    "RISK__MAX_POSITION_QUOTE": "100000000",
    "RISK__MAX_TOTAL_QUOTE": "100000000",
}
# 560 buys of 5 USD need 2,800 USD and fees; the default 10,000 would do, a million leaves no doubt.
SIM_ENV = {"EXCHANGE_SIM__STARTING_BALANCES__USD": "1000000"}


def proposal(product_id: str) -> dict[str, Any]:
    """A buy the risk rules accept, with stops so wide that no position is exited during the run."""
    now = datetime.now(UTC)
    return {
        "proposal_id": str(uuid.uuid4()),
        "product_id": product_id,
        "side": "BUY",
        "conviction": 0.5,
        "components": {"strength": 0.5},
        "quote_size": QUOTE_SIZE,
        "stop_loss_pct": 99,
        "take_profit_pct": 1000,
        "time_stop_s": 86_400,
        "created_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=DRAIN_TIMEOUT_S + 300)).isoformat(),
    }


def ms_row(name: str, values_ms: list[float], note: str = "") -> str:
    ordered = sorted(values_ms)
    return f"| {name} | {percentile(ordered, 50):.1f} | {percentile(ordered, 99):.1f} | {len(ordered)} | {note} |"


async def intake(http: aiohttp.ClientSession, url: str) -> tuple[list[str], float, list[float], Counter[str]]:
    """Post INTAKE_PROPOSALS proposals from INTAKE_CONCURRENCY clients; the accepted ids, the time, the latencies."""
    bodies = [orjson.dumps(proposal(PRODUCTS[i % len(PRODUCTS)])) for i in range(INTAKE_PROPOSALS)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted: list[str] = []
    latencies_ms: list[float] = []
    answers: Counter[str] = Counter()

    async def client() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            start = time.perf_counter()
            try:
                async with http.post(f"{url}/v1/proposals", data=body) as answer:
                    data = await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                answers[f"error {type(exc).__name__}"] += 1
                continue
            latencies_ms.append((time.perf_counter() - start) * 1000)
            answers[str(status)] += 1
            if status == 202:
                accepted.append(orjson.loads(data)["proposal_id"])

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(INTAKE_CONCURRENCY)))
    return accepted, time.perf_counter() - started, latencies_ms, answers


def backlog(stream: str) -> tuple[int, int]:
    """Entries of the intake stream not yet read by the workers' group (lag), and read but not acknowledged."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        group = next(g for g in client.xinfo_groups(stream) if g["name"].decode() == GROUP)
        return int(group.get("lag") or 0), int(group["pending"])
    finally:
        client.close()


async def drain(stream: str) -> float:
    """Wait until the worker has read and acknowledged every queued proposal; the seconds it took from now."""
    started = time.monotonic()
    while True:
        lag, pending = await asyncio.to_thread(backlog, stream)
        if lag == 0 and pending == 0:
            return time.monotonic() - started
        if time.monotonic() - started > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"backlog not drained after {DRAIN_TIMEOUT_S:g}s: lag {lag}, pending {pending}")
        await asyncio.sleep(0.2)


async def outcomes(http: aiohttp.ClientSession, url: str, ids: list[str]) -> list[dict[str, Any]]:
    semaphore = asyncio.Semaphore(8)

    async def one(pid: str) -> dict[str, Any]:
        async with semaphore, http.get(f"{url}/v1/proposals/{pid}") as answer:
            return orjson.loads(await answer.read())

    return list(await asyncio.gather(*(one(pid) for pid in ids)))


async def latency(
    http: aiohttp.ClientSession, url: str
) -> tuple[list[float], list[float], list[float], list[float], Counter[str]]:
    """Proposals one at a time: POST -> first seen `ordered`, POST -> `filled`, the executor's own figure."""
    to_ordered: list[float] = []
    to_filled: list[float] = []
    executor_side: list[float] = []
    post_ms: list[float] = []
    seen: Counter[str] = Counter()
    for i in range(LATENCY_PROPOSALS):
        next_at = time.perf_counter() + LATENCY_EVERY_S
        body = proposal(PRODUCTS[i % len(PRODUCTS)])
        pid = body["proposal_id"]
        start = time.perf_counter()
        async with http.post(f"{url}/v1/proposals", data=orjson.dumps(body)) as answer:
            await answer.read()
            status = answer.status
        post_ms.append((time.perf_counter() - start) * 1000)
        if status != 202:
            seen[f"POST {status}"] += 1
            continue
        ordered_at = None
        deadline = start + SETTLE_TIMEOUT_S
        while True:
            async with http.get(f"{url}/v1/proposals/{pid}") as answer:
                outcome = orjson.loads(await answer.read())
            now = time.perf_counter()
            if ordered_at is None and outcome["status"] != "pending":
                ordered_at = now
            if outcome["status"] in TERMINAL:
                break
            if now > deadline:
                outcome["status"] = f"still {outcome['status']} after {SETTLE_TIMEOUT_S:g}s"
                break
            await asyncio.sleep(POLL_S)
        seen[outcome["status"] + (f" ({outcome.get('reason')})" if outcome.get("reason") else "")] += 1
        if outcome["status"] == "filled":
            to_filled.append((now - start) * 1000)
            to_ordered.append(((ordered_at or now) - start) * 1000)
            executor_side.append((outcome["updated_at"] - outcome["received_at"]) * 1000)
        await asyncio.sleep(max(next_at - time.perf_counter(), 0))
    return post_ms, to_ordered, to_filled, executor_side, seen


async def get_json(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as answer:
        return orjson.loads(await answer.read())


async def metric_lines(http: aiohttp.ClientSession, url: str, *names: str) -> list[str]:
    """Non-zero samples of these metrics from a service's /metrics."""
    async with http.get(f"{url}/metrics") as answer:
        text = (await answer.read()).decode()
    return [
        line
        for line in text.splitlines()
        if line.startswith(names) and not line.startswith("#") and float(line.split()[-1]) != 0
    ]


def peak_rss_mib(service: ServiceProcess) -> float | None:
    """VmHWM (the most the process ever had resident) in MiB."""
    try:
        status = Path(f"/proc/{service.process.pid}/status").read_text()
    except OSError:
        return None
    line = next((line for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else None


def start(name: str, prefix: str, tmp: Path, extra_env: dict[str, str] | None = None) -> ServiceProcess:
    return ServiceProcess.start(
        name,
        config_dir=ROOT / "config",
        redis_url=REDIS_URL,
        key_prefix=prefix,
        token=DEV_API_TOKEN,
        log_dir=tmp,
        service=name,
        extra_env=extra_env,
    )


async def run(services: dict[str, ServiceProcess], prefix: str) -> list[str]:
    sim, executor = services["exchange_sim"], services["executor"]
    stream = KeySpace(prefix, "executor").key("proposals")
    lines: list[str] = []
    connector = aiohttp.TCPConnector(limit=INTAKE_CONCURRENCY + 4)
    async with aiohttp.ClientSession(connector=connector, headers=HEADERS) as http:
        url = executor.url
        # warm-up: one proposal through the whole path (connections, imports, the catalog, first quota grants)
        async with http.post(f"{url}/v1/proposals", data=orjson.dumps(proposal(PRODUCTS[0]))) as answer:
            await answer.read()
        await drain(stream)

        accepted, intake_s, intake_ms, answers = await intake(http, url)
        drain_s = await drain(stream)
        queued = await outcomes(http, url, accepted)
        statuses = Counter(o["status"] + (f" ({o['reason']})" if o.get("reason") else "") for o in queued)
        received = [o["received_at"] for o in queued]
        finished = [o["updated_at"] for o in queued]
        worker_s = max(finished) - min(received) if queued else float("nan")
        backlog_ms = [(o["updated_at"] - o["received_at"]) * 1000 for o in queued if o["status"] == "filled"]

        await asyncio.sleep(QUOTA_WINDOW_S)
        post_ms, to_ordered, to_filled, executor_side, seen = await latency(http, url)

        stats = await get_json(http, f"{sim.url}/sim/stats")
        executor_metrics = await metric_lines(
            http,
            url,
            "trader_proposals_rejected_total",
            "trader_exchange_rate_limited_total",
            "trader_orders_total",
            "trader_rate_limiter_fallback_grants_total",
        )
        exchange_calls = await metric_lines(http, url, "trader_exchange_requests_total")
    rss = {name: (service.rss_mib(), peak_rss_mib(service)) for name, service in services.items()}

    p50_filled = percentile(sorted(to_filled), 50)
    lines.append(f"\nexecutor against the simulator on loopback (key prefix {prefix}):\n")
    lines.append("| measure | figure | note |\n|---|---:|---|")
    lines.append(
        f"| intake: proposals/s accepted (202) | {len(accepted) / intake_s:.0f} | {len(accepted)} of "
        f"{INTAKE_PROPOSALS} in {intake_s:.2f} s, {INTAKE_CONCURRENCY} concurrent clients |"
    )
    lines.append(
        f"| worker: queued proposals/s drained | {len(queued) / worker_s:.1f} | {len(queued)} in {worker_s:.1f} s "
        f"(first received to last recorded); drained {drain_s:.1f} s after the intake ended |"
    )
    lines.append("\n| latency | p50 ms | p99 ms | n | note |\n|---|---:|---:|---:|---|")
    lines.append(ms_row("intake POST /v1/proposals (202)", intake_ms, f"{INTAKE_CONCURRENCY} concurrent"))
    lines.append(ms_row("queued proposal: received -> filled (executor)", backlog_ms, "queueing included"))
    lines.append(ms_row("one at a time: POST (202)", post_ms, ""))
    lines.append(ms_row("one at a time: POST -> `ordered` seen", to_ordered, f"polled every {POLL_S * 1000:g} ms"))
    lines.append(ms_row("one at a time: POST -> `filled` seen", to_filled, f"polled every {POLL_S * 1000:g} ms"))
    lines.append(ms_row("one at a time: updated_at - received_at (executor)", executor_side, "the executor's clock"))
    lines.append("\n| service | VmRSS MiB after the run | peak (VmHWM) MiB |\n|---|---:|---:|")
    for name, (now_mib, peak_mib) in rss.items():
        lines.append(f"| {name} | {now_mib or float('nan'):.1f} | {peak_mib or float('nan'):.1f} |")
    over = [name for name, (now_mib, _) in rss.items() if now_mib is None or now_mib > TARGET_RSS_MIB]
    lines.append(
        f"\nTargets: p50 POST -> filled <= {TARGET_P50_MS:g} ms: "
        f"{'met' if p50_filled <= TARGET_P50_MS else 'not met'} ({p50_filled:.1f} ms; executor-side "
        f"{percentile(sorted(executor_side), 50):.1f} ms); each service <= {TARGET_RSS_MIB:g} MiB RSS: "
        f"{'met' if not over else 'not met (' + ', '.join(over) + ')'}"
    )
    lines.append(
        f"\nsimulator: orders {stats['orders']}, rejections {stats['rejections']}, requests {stats['requests']}, "
        f"rate-limited (429) {stats['rate_limited']}"
    )
    lines.append(f"simulator requests by endpoint: {stats['endpoints']}")
    lines.append(f"intake answers: {dict(answers)}; queued outcomes: {dict(statuses)}; one at a time: {dict(seen)}")
    lines.append("executor exchange calls: " + ", ".join(metric_summary(exchange_calls)))
    lines.append("executor counters: " + (", ".join(metric_summary(executor_metrics)) or "none"))
    for name, service in services.items():
        problems = service.log_problems()
        lines.append(f"{name} log warnings/errors: " + ("; ".join(problems) if problems else "none"))
    return lines


def metric_summary(lines: list[str]) -> list[str]:
    """`name{labels} 1.0` as `name{labels}=1`."""
    return [f"{line.rsplit(' ', 1)[0]}={float(line.rsplit(' ', 1)[1]):g}" for line in lines]


async def main() -> None:
    if not redis_answers(REDIS_URL):
        raise SystemExit(f"bench: no Redis at {REDIS_URL}; start one (make run starts one) and run again")
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    services: dict[str, ServiceProcess] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            services["ratelimit"] = start("ratelimit", prefix, Path(tmp))
            services["exchange_sim"] = start("exchange_sim", prefix, Path(tmp), SIM_ENV)
            await wait_all_ready(list(services.values()))
            urls = {"RATELIMIT_URL": services["ratelimit"].url, "EXCHANGE_API_URL": services["exchange_sim"].url}
            services["executor"] = start("executor", prefix, Path(tmp), urls | RISK_ENV)
            await wait_all_ready([services["executor"]])
            lines = await run(services, prefix)
        finally:
            for service in services.values():
                service.stop()
            delete_prefix(REDIS_URL, prefix)
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
