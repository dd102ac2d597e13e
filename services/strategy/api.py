"""Strategy routes: evaluate candles, run a cycle, recent triggers and proposals, the policy, the threshold sweep."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from services.strategy.conviction import Liquidity, Trigger, find_triggers, propose, ratio, sweep
from services.strategy.cycle import CycleReport, CycleTriggers
from services.strategy.deps import RunnerDep, SettingsDep
from services.strategy.policy import Policy, PolicyChange, PolicyIn
from services.strategy.settings import DynamicConviction, LatencyConfig, StrategyConfig
from services.strategy.signals import Candles, evaluate, trend
from shared.errors import InvalidRequest
from shared.proposal import PRODUCT_ID_PATTERN, Proposal

router = APIRouter(prefix="/v1", tags=["strategy"])
MAX_PRODUCTS = 500
MAX_CANDLES = 349
MIN_SWEEP_STEP = 0.001
# 500 products x 349 candles as JSON objects with full-precision numbers or Coinbase's strings: under 40 MiB.
EVALUATE_MAX_BYTES = 40 * 1024 * 1024


class CandleIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    start: int
    open: float = Field(gt=0, allow_inf_nan=False)
    high: float = Field(gt=0, allow_inf_nan=False)
    low: float = Field(gt=0, allow_inf_nan=False)
    close: float = Field(gt=0, allow_inf_nan=False)
    volume: float = Field(ge=0, allow_inf_nan=False)


class LiquidityIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    spread_bps: float = Field(ge=0, allow_inf_nan=False)
    quote_volume_24h: float = Field(ge=0, allow_inf_nan=False)


class EvaluateIn(BaseModel):
    """Candles per product (Coinbase's candle shape, any order), optional liquidity from the universe."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    candles: dict[
        Annotated[str, Field(pattern=PRODUCT_ID_PATTERN)],
        Annotated[list[CandleIn], Field(min_length=1, max_length=MAX_CANDLES)],
    ] = Field(min_length=1, max_length=MAX_PRODUCTS)
    liquidity: dict[str, LiquidityIn] = {}
    min_conviction_to_propose: float | None = Field(default=None, ge=0, le=1)


class EvaluateOut(BaseModel):
    threshold: float
    triggers: list[Trigger]
    proposals: list[Proposal]
    ratio: float


class ProposalsOut(BaseModel):
    recent: list[Proposal]
    queued: list[Proposal]


class PolicyOut(BaseModel):
    policy: Policy
    dynamic_conviction: DynamicConviction
    changes: list[PolicyChange]


def candles_of(body: EvaluateIn) -> Candles:
    products = tuple(sorted(body.candles))
    width = max(len(rows) for rows in body.candles.values())
    data = np.full((len(products), width, 5), np.nan)
    for index, product_id in enumerate(products):
        rows = sorted(body.candles[product_id], key=lambda c: c.start)
        values = np.array([[c.open, c.high, c.low, c.close, c.volume] for c in rows])
        data[index, width - len(rows) :, :] = values
    return Candles(products, *(data[:, :, i] for i in range(5)))


@router.post("/evaluate", summary="Triggers, convictions and proposals for the candles given; no side effects")
async def evaluate_candles(body: EvaluateIn, settings: SettingsDep, runner: RunnerDep) -> EvaluateOut:
    config = settings.strategy
    threshold = body.min_conviction_to_propose
    if threshold is None:
        threshold = (await runner.policy.current()).threshold
    candles = candles_of(body)
    liquidity = {pid: Liquidity(q.spread_bps, q.quote_volume_24h) for pid, q in body.liquidity.items()}
    found = find_triggers(
        candles.products, evaluate(candles, config.signals), list(trend(candles, config.signals)), liquidity, config
    )
    now = datetime.now(UTC)
    proposals = propose(found, threshold=threshold, config=config, cycle_id=f"evaluate:{now.isoformat()}", now=now)
    return EvaluateOut(
        threshold=threshold, triggers=found, proposals=proposals, ratio=ratio(len(found), len(proposals))
    )


@router.post("/cycle", summary="Run one cycle now (token)")
async def run_cycle(runner: RunnerDep) -> CycleReport:
    return await runner.run()


async def recent_cycles(runner: RunnerDep, count: int) -> list[CycleReport]:
    raws = await runner.redis.lrange(runner.cycles_key, 0, count - 1)
    return [CycleReport.model_validate_json(raw) for raw in raws]


@router.get("/triggers", summary="The triggers of the recent cycles, newest first, with their convictions")
async def get_triggers(runner: RunnerDep, cycles: Annotated[int, Query(ge=1, le=50)] = 10) -> list[dict[str, Any]]:
    return [
        {"cycle_id": r.cycle_id, "result": r.result, "threshold": r.threshold, "triggers": r.triggers}
        for r in await recent_cycles(runner, cycles)
    ]


@router.get("/proposals", summary="The proposals of the recent cycles, and those queued for the executor")
async def get_proposals(runner: RunnerDep, cycles: Annotated[int, Query(ge=1, le=50)] = 10) -> ProposalsOut:
    queued = [Proposal.model_validate_json(raw) for raw in (await runner.redis.hgetall(runner.outbox_key)).values()]
    recent = [p for r in await recent_cycles(runner, cycles) for p in r.proposals]
    return ProposalsOut(recent=recent, queued=queued)


@router.get("/policy", summary="The conviction threshold in force, its source and its changes")
async def get_policy(runner: RunnerDep, settings: SettingsDep) -> PolicyOut:
    return PolicyOut(
        policy=await runner.policy.current(),
        dynamic_conviction=settings.strategy.dynamic_conviction,
        changes=await runner.policy.changes(),
    )


@router.put("/policy", summary="Change the profile or the threshold (0..1) for every replica (token)")
async def put_policy(body: PolicyIn, runner: RunnerDep) -> Policy:
    policy = await runner.policy.change(body)
    runner.metrics.threshold.set(policy.threshold)
    return policy


@router.get("/threshold-sweep", summary="How many proposals the recorded triggers would have made at each threshold")
async def threshold_sweep(
    runner: RunnerDep,
    start: Annotated[float, Query(alias="from", ge=0, le=1)] = 0.2,
    stop: Annotated[float, Query(alias="to", ge=0, le=1)] = 0.4,
    step: Annotated[float, Query(gt=0, le=1)] = 0.01,
) -> dict[str, Any]:
    if stop < start:
        raise InvalidRequest(f"to ({stop}) must not be below from ({start})", details={"field": "to", "value": stop})
    if step < MIN_SWEEP_STEP:
        raise InvalidRequest(f"step {step} is below {MIN_SWEEP_STEP}", details={"field": "step", "value": step})
    count = math.floor((stop - start) / step + 1e-9) + 1  # never past `to`
    thresholds = [round(start + i * step, 6) for i in range(count)]
    raws = await runner.redis.lrange(runner.history_key, 0, -1)
    cycles = [CycleTriggers.model_validate_json(raw) for raw in raws]
    counts = sweep([c.triggers for c in cycles], thresholds)
    return {
        "cycles": len(cycles),
        "triggers": sum(len(c.triggers) for c in cycles),
        "proposals_by_threshold": [{"threshold": t, "proposals": n} for t, n in counts.items()],
    }


@router.get("/config", summary="The validated strategy policy in force (YAML plus environment)")
async def get_config(settings: SettingsDep) -> dict[str, StrategyConfig | LatencyConfig]:
    return {"strategy": settings.strategy, "latency": settings.latency}
