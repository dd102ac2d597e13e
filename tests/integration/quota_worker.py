"""A client process for the fallback tests: learns its share from the service, then takes quota as fast as it may.

Run as `python -m tests.integration.quota_worker BASE_URL CONFIG_DIR CLIENT_ID SECONDS`. It draws a little
`create_order` quota every 100 ms (printing `ready` after the first grant) until a line arrives on stdin, then
takes as much as it may for SECONDS and prints the monotonic times of those grants as JSON (CLOCK_MONOTONIC is
shared by every process on the machine).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from services.ratelimit.settings import RatelimitSettings
from shared.quota import QuotaClient, QuotaDenied
from shared.settings import DEV_API_TOKEN, load_settings


async def main(base: str, config_dir: str, client_id: str, seconds: float) -> None:
    config = load_settings(RatelimitSettings, config_dir=Path(config_dir)).ratelimit
    client = QuotaClient(
        base_url=base, token=DEV_API_TOKEN, config=config, client_id=client_id, registry=CollectorRegistry()
    )
    await client.take("create_order")
    print("ready", flush=True)
    go = asyncio.create_task(asyncio.to_thread(sys.stdin.readline))
    while not go.done():
        await client.take("create_order")
        await asyncio.wait([go], timeout=0.1)
    grants: list[float] = []
    fallback = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            grant = await client.take("create_order", max_wait_ms=100)
        except QuotaDenied as denied:
            await asyncio.sleep(min(denied.retry_after_ms, 100) / 1000)
            continue
        grants.append(time.monotonic())
        fallback += grant.fallback
    await client.aclose()
    print(orjson.dumps({"grants": grants, "fallback": fallback}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
