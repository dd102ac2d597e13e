"""Coinbase Advanced Trade paths served by the simulator."""

from __future__ import annotations

import time

from fastapi import APIRouter

router = APIRouter(prefix="/api/v3/brokerage", tags=["coinbase"])


@router.get("/time", summary="Server time, as Coinbase's GET /api/v3/brokerage/time")
async def server_time() -> dict[str, str]:
    now = time.time()
    return {
        "iso": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
        "epochSeconds": str(int(now)),
        "epochMillis": str(int(now * 1000)),
    }
