"""Drives the service with wrk: a Lua script for the acquire POST and a parser for wrk's report."""

from __future__ import annotations

import asyncio
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

WRK = shutil.which("wrk") or "/usr/bin/wrk"
TO_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
RATE_LINE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
PERCENTILE_LINE = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
NON_2XX_LINE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
SOCKET_ERRORS_LINE = re.compile(r"Socket errors:\s+(.+)")


@dataclass(frozen=True)
class WrkStats:
    """The figures the report needs from one wrk run."""

    rate: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: str


def write_script(directory: Path, *, body: str, token: str) -> Path:
    """Write a wrk Lua script that POSTs `body` as JSON with the bearer token."""
    path = directory / "acquire.lua"
    path.write_text(
        "\n".join(
            [
                'wrk.method = "POST"',
                f"wrk.body = [==[{body}]==]",
                'wrk.headers["Content-Type"] = "application/json"',
                f'wrk.headers["Authorization"] = "Bearer {token}"',
                "",
            ]
        )
    )
    return path


def parse(report: str) -> WrkStats:
    """Requests/sec, the 50% and 99% latencies and the error lines of a `wrk --latency` report."""
    rate = RATE_LINE.search(report)
    percentiles = {q: float(value) * TO_MS[unit] for q, value, unit in PERCENTILE_LINE.findall(report)}
    if rate is None or set(percentiles) != {"50", "99"}:
        raise RuntimeError(f"unexpected wrk output:\n{report}")
    non_2xx = NON_2XX_LINE.search(report)
    socket_errors = SOCKET_ERRORS_LINE.search(report)
    return WrkStats(
        rate=float(rate.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=socket_errors.group(1).strip() if socket_errors else "",
    )


async def run(url: str, script: Path, *, connections: int, duration_s: int) -> WrkStats:
    """One `wrk -t1 --latency` run against url."""
    process = await asyncio.create_subprocess_exec(
        WRK,
        "-t1",
        f"-c{connections}",
        f"-d{duration_s}s",
        "--latency",
        "-s",
        str(script),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {err.decode(errors='replace').strip()}")
    return parse(out.decode(errors="replace"))
