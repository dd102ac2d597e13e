"""What the quota protects, measured on the real service with the committed ratelimits.yaml.

1. Orders under saturating market data: 128 callers take `get_candles` quota back to back with
   max_wait_ms=5000 while an order (`create_order`, critical) asks every 200 ms. Prints the orders' waits
   against one emission interval, and every grant against the pool's hard limit (rate x t + burst).
2. Two clients in fallback at once (the service stopped): granted rate together against the pool's limit,
   for clients that learned their share from the service and, in the same run, for clients that kept the
   fixed `expected_replicas` share (the behaviour before the service counted its clients).

Run with `python -m bench.quota_safety` (part of `make bench`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client import CollectorRegistry

from bench.measure import most_in_window, percentile
from bench.service import ServiceProcess, wait_all_ready
from devtools.redis_server import delete_prefix, redis_answers
from devtools.stack import ROOT
from services.ratelimit.settings import RatelimitSettings
from shared.quota import QuotaClient, QuotaDenied
from shared.ratelimits import RateLimitConfig
from shared.settings import DEV_API_TOKEN, load_settings

REDIS_URL = "redis://127.0.0.1:6379/0"
POOL = "private"
MARKET_DATA_CALLERS = 128
SATURATION_S = 8.0
ORDER_EVERY_S = 0.2
FALLBACK_S = 5.0


async def saturate(base: str, config: RateLimitConfig) -> list[str]:
    """Market data saturating the pool, orders among it; the table rows."""
    headers = {"Authorization": f"Bearer {DEV_API_TOKEN}"}
    grants: list[float] = []
    order_waits: list[float] = []
    denied = 0
    started = time.monotonic()
    deadline = started + SATURATION_S
    connector = aiohttp.TCPConnector(limit=MARKET_DATA_CALLERS + 8)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def ask(endpoint: str) -> tuple[int, float]:
            body = {"endpoint": endpoint, "max_wait_ms": 5000, "client_id": f"bench-{endpoint}"}
            async with http.post(f"{base}/v1/acquire", json=body) as answer:
                data = await answer.json()
                if answer.status == 200:
                    grants.append(time.monotonic())
                return answer.status, data.get("waited_ms", 0.0)

        async def market_data() -> None:
            nonlocal denied
            while time.monotonic() < deadline:
                status, _ = await ask("get_candles")
                denied += status != 200

        async def orders() -> None:
            await asyncio.sleep(1.0)  # the market data has filled the pool by then
            while time.monotonic() < deadline - 0.5:
                status, waited = await ask("create_order")
                if status == 200:
                    order_waits.append(waited)
                await asyncio.sleep(ORDER_EVERY_S)

        await asyncio.gather(orders(), *(market_data() for _ in range(MARKET_DATA_CALLERS)))
        async with http.get(f"{base}/v1/quota/{POOL}") as answer:
            utilization = (await answer.json())["utilization_pct"]
    limit = config.pools[POOL]
    rate = config.effective_rate(limit)
    interval_ms = 1000 / rate
    elapsed = max(grants) - min(grants)
    waits = sorted(order_waits)
    bound = rate * elapsed + limit.burst
    worst_second = most_in_window(grants, 1.0)
    return [
        f"| orders' wait p50 / p99 / max | {percentile(waits, 50):.1f} / {percentile(waits, 99):.1f} / "
        f"{waits[-1]:.1f} ms | one interval = {interval_ms:.1f} ms ({len(waits)} orders) |",
        f"| grants in {elapsed:.2f} s | {len(grants)} | limit rate x t + burst = {bound:.1f} |",
        f"| most grants in any 1 s | {worst_second} | limit {rate + limit.burst:.1f} |",
        f"| market-data requests denied after waiting | {denied} | |",
        f"| pool utilization at the end | {utilization:.1f} % | never above 100 % |",
    ]


async def fallback_rows(base: str, config: RateLimitConfig, service: ServiceProcess) -> list[str]:
    """Two clients learn their share, the service stops, both take quota locally as fast as they may."""
    learned = [client(base, config) for _ in range(2)]
    for quota in learned:
        await quota.take("create_order")
    for quota in learned:
        await quota.take("create_order")  # both now know that two processes draw on the pool
    service.stop()
    fixed = [client(base, config) for _ in range(2)]  # never told: the fixed expected_replicas share
    rows = []
    limit = config.pools[POOL]
    rate = config.effective_rate(limit)
    for name, pair in (("learned from the service", learned), (f"fixed 1/{config.expected_replicas}", fixed)):
        times: list[float] = []
        deadline = time.monotonic() + FALLBACK_S

        async def run(quota: QuotaClient, out: list[float] = times, until: float = deadline) -> None:
            while time.monotonic() < until:
                try:
                    await quota.take("create_order", max_wait_ms=100)
                    out.append(time.monotonic())
                except QuotaDenied as refused:
                    await asyncio.sleep(refused.retry_after_ms / 1000)

        await asyncio.gather(*(run(quota) for quota in pair))
        for quota in pair:
            await quota.aclose()
        per_s = (len(times) - 1) / (max(times) - min(times))
        rows.append(
            f"| 2 clients in fallback, share {name} | {per_s:.1f}/s together, at most {most_in_window(times, 1.0)} "
            f"in 1 s | pool limit {rate:.1f}/s + burst {limit.burst} |"
        )
    return rows


def client(base: str, config: RateLimitConfig) -> QuotaClient:
    return QuotaClient(base_url=base, token=DEV_API_TOKEN, config=config, registry=CollectorRegistry(), probe_s=60)


async def with_service(
    run: Callable[[ServiceProcess, RateLimitConfig], Awaitable[list[str]]], config: RateLimitConfig, tmp: Path
) -> list[str]:
    """Run one part against a ratelimit process of its own, under a key prefix of its own."""
    prefix = f"bench:{uuid.uuid4().hex[:8]}:"
    service = ServiceProcess.start(
        "ratelimit",
        config_dir=ROOT / "config",
        redis_url=REDIS_URL,
        key_prefix=prefix,
        token=DEV_API_TOKEN,
        log_dir=tmp,
    )
    try:
        await wait_all_ready([service])
        return await run(service, config)
    finally:
        service.stop()
        delete_prefix(REDIS_URL, prefix)


async def main() -> None:
    if not redis_answers(REDIS_URL):
        raise SystemExit(f"bench: no Redis at {REDIS_URL}; start one (make run starts one) and run again")
    config = load_settings(RatelimitSettings, config_dir=ROOT / "config").ratelimit
    with tempfile.TemporaryDirectory() as tmp:
        rows = await with_service(lambda service, cfg: saturate(service.url, cfg), config, Path(tmp))
        rows += await with_service(lambda service, cfg: fallback_rows(service.url, cfg, service), config, Path(tmp))
    print(f"\nquota safety, pool {POOL!r} of config/ratelimits.yaml:\n")
    print("| measure | figure | bound |\n|---|---:|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
