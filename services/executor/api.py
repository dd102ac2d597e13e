"""Executor routes: take proposals, their outcomes, trades, positions, PnL, risk, halt and resume."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from services.executor.deps import ExecutorDep, SettingsDep
from services.executor.ledger import Outcome, Position, Trade, closed_summary, unrealized
from services.executor.settings import LatencyConfig, RiskConfig
from shared.errors import NotFound
from shared.proposal import Proposal
from shared.ratelimits import Priority

router = APIRouter(prefix="/v1", tags=["executor"])


@router.post(
    "/proposals",
    status_code=202,
    summary="Take a proposal (token): queued before the answer; the same proposal_id again gets its first outcome",
)
async def take_proposal(body: Proposal, executor: ExecutorDep) -> JSONResponse:
    first = await executor.ledger.accept(body)
    if first is not None:
        return JSONResponse(first.model_dump(), status_code=200)
    executor.metrics.received.inc()
    accepted = await executor.ledger.outcome(body.proposal_id)
    assert accepted is not None
    return JSONResponse(accepted.model_dump(), status_code=202)


@router.get("/proposals/{proposal_id}", summary="A proposal's outcome: pending, rejected, ordered, filled, exited")
async def get_outcome(proposal_id: str, executor: ExecutorDep) -> Outcome:
    outcome = await executor.ledger.outcome(proposal_id)
    if outcome is None:
        raise NotFound(f"no proposal {proposal_id!r}", details={"proposal_id": proposal_id})
    return outcome


@router.get("/trades", summary="Trades, newest first")
async def get_trades(
    executor: ExecutorDep,
    since: Annotated[float, Query(ge=0, description="Unix seconds")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
) -> list[Trade]:
    return await executor.ledger.trades(since=since, limit=limit)


@router.get("/positions", summary="Open positions")
async def get_positions(executor: ExecutorDep) -> list[Position]:
    return list((await executor.ledger.positions()).values())


@router.get("/pnl", summary="Realised and unrealised PnL, fees, win rate over the last closed trades")
async def get_pnl(executor: ExecutorDep) -> dict[str, Any]:
    return await pnl(executor)


async def pnl(executor: ExecutorDep) -> dict[str, Any]:
    trades = await executor.ledger.trades()
    closed = closed_summary(trades)
    positions = await executor.ledger.positions()
    # A view: its prices ask below the critical priority of the exits' bids.
    books = (
        {b.product_id: b for b in await executor.exchange.best_bid_ask(list(positions), at_most=Priority.NORMAL)}
        if positions
        else {}
    )
    return {
        "realized": str(closed.realized),
        "unrealized": str(unrealized(positions, books)),
        "fees": str(sum((t.fees_quote for t in trades), Decimal(0))),
        "closed_trades": closed.count,
        "win_rate": closed.win_rate,
        "win_rate_over": closed.win_rate_over,
        "open_positions": len(positions),
    }


@router.get("/risk", summary="The risk limits and their current use")
async def get_risk(executor: ExecutorDep, settings: SettingsDep) -> dict[str, Any]:
    book = await executor.book()
    return {
        "limits": settings.risk,
        "use": {
            "halted": book.halted,
            "trades_last_hour": book.trades_last_hour,
            "open_positions": len(book.positions_quote),
            "total_quote": str(sum(book.positions_quote.values(), Decimal(0))),
            "realized_today_quote": str(book.realized_today_quote),
        },
    }


@router.post("/halt", summary="Halt trading: every proposal is rejected until resumed (token)")
async def halt(executor: ExecutorDep) -> dict[str, bool]:
    await executor.ledger.set_halted(True, "halted through the API")
    executor.metrics.halted.set(1)
    return {"halted": True}


@router.post("/resume", summary="Resume trading (token)")
async def resume(executor: ExecutorDep) -> dict[str, bool]:
    await executor.ledger.set_halted(False)
    executor.metrics.halted.set(0)
    return {"halted": False}


@router.get("/config", summary="The validated risk limits in force (YAML plus environment)")
async def get_config(settings: SettingsDep) -> dict[str, RiskConfig | LatencyConfig]:
    return {"risk": settings.risk, "latency": settings.latency}
