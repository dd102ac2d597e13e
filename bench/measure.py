"""Closed-loop load from the benchmark process: coroutines that call an operation back to back."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

# One decision; True when granted, False when denied. Exceptions are counted as errors.
Op = Callable[[], Awaitable[bool]]


@dataclass(frozen=True)
class Result:
    """One row of the report: a variant at one concurrency."""

    variant: str
    concurrency: int
    rate: float
    p50_ms: float
    p99_ms: float
    denied: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Tally:
    """What the workers of one measurement saw."""

    latencies_s: list[float] = field(default_factory=list)
    denied: int = 0
    errors: Counter[str] = field(default_factory=Counter)


def percentile(ascending: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an ascending sequence; NaN when empty."""
    if not ascending:
        return math.nan
    rank = max(math.ceil(q / 100 * len(ascending)), 1)
    return ascending[rank - 1]


def most_in_window(times: Sequence[float], window_s: float) -> int:
    """The most events of `times` that fall in any window of `window_s` seconds."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(ordered):
        while j < len(ordered) and ordered[j] < start + window_s:
            j += 1
        best = max(best, j - i)
    return best


async def _worker(op: Op, deadline: float, tally: Tally) -> None:
    clock = time.perf_counter
    while clock() < deadline:
        start = clock()
        try:
            granted = await op()
        except Exception as exc:  # a failed call is reported, not fatal to the run
            tally.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
            continue
        tally.latencies_s.append(clock() - start)
        if not granted:
            tally.denied += 1


async def closed_loop(variant: str, ops: Sequence[Op], duration_s: float) -> Result:
    """Run one worker per op for duration_s; decisions/s counts grants and denials, not errors."""
    tally = Tally()
    start = time.perf_counter()
    await asyncio.gather(*(_worker(op, start + duration_s, tally) for op in ops))
    elapsed = time.perf_counter() - start
    latencies = sorted(tally.latencies_s)
    return Result(
        variant=variant,
        concurrency=len(ops),
        rate=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        denied=tally.denied,
        errors=dict(tally.errors),
    )


async def measure(variant: str, ops: Sequence[Op], *, warmup_s: float, duration_s: float) -> Result:
    """A discarded warm-up run, then the measured one."""
    await closed_loop(variant, ops, warmup_s)
    return await closed_loop(variant, ops, duration_s)
