"""The executor's records in Redis: proposal outcomes, the intake stream, positions and trades.

Keys (under `<prefix>executor:`): `proposals` (the intake stream, read by the `workers` group), `outcome:<id>`
(a hash per proposal: status, reason, order and times), `position:<product>` (a hash per open position),
`positions` (the set of open ones), `trade:<id>` (a hash per trade) with `trades` (a sorted set by time), and
`halted`. Everything a trader needs after a restart is here, so nothing lives only in a process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from shared.exchange.models import PriceBook
from shared.proposal import Proposal
from shared.redis import KeySpace

Status = Literal["pending", "rejected", "ordered", "filled", "exited", "failed"]
GROUP = "workers"
HOUR_S = 3600

# Accepts a proposal once: the outcome hash and the stream entry are written together, or not at all.
INTAKE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.call('HGETALL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'status', 'pending', 'received_at', ARGV[2], 'updated_at', ARGV[2], 'proposal', ARGV[1])
redis.call('XADD', KEYS[2], '*', 'proposal_id', ARGV[3])
return {}
"""

# Records an outcome only while the current one is among those allowed (ARGV[1] of them, then the fields): a
# rejection made without the locks never lands on a proposal a worker is ordering, nor "ordered" on a rejected one.
RECORD_IF_LUA = """
local status = redis.call('HGET', KEYS[1], 'status')
local allowed = tonumber(ARGV[1])
for i = 2, allowed + 1 do
  if status == ARGV[i] then
    redis.call('HSET', KEYS[1], unpack(ARGV, allowed + 2))
    break
  end
end
return status
"""


class Outcome(BaseModel):
    proposal_id: str
    status: Status
    reason: str | None = None
    detail: str | None = None
    order_id: str | None = None
    client_order_id: str | None = None
    received_at: float
    updated_at: float


class Position(BaseModel):
    product_id: str
    base_size: Decimal
    cost_quote: Decimal  # what was paid, fees included
    entry_price: Decimal
    fees_quote: Decimal
    opened_at: float
    proposal_id: str
    stop_loss_pct: float
    take_profit_pct: float
    time_stop_s: int
    # Set before an exit order is sent: a retry after a crash looks that order up instead of sending another.
    exit_key: str | None = None


class Trade(BaseModel):
    trade_id: str
    product_id: str
    side: Literal["BUY", "SELL"]
    base_size: Decimal
    price: Decimal
    quote_value: Decimal
    fees_quote: Decimal
    at: float
    order_id: str
    proposal_id: str
    realized_quote: Decimal | None = None  # on an exit: proceeds less cost and fees
    exit_reason: str | None = None


# The win rate is over this many of the last closed trades (the strategy's dynamic conviction reads it).
WIN_RATE_TRADES = 20


class Closed(BaseModel):
    """What the closed trades add up to."""

    realized: Decimal
    count: int
    win_rate: float
    win_rate_over: int


def closed_summary(trades: list[Trade]) -> Closed:
    """Realised PnL of the closed trades (newest first), and the winning share of the last WIN_RATE_TRADES."""
    closed = [t.realized_quote for t in trades if t.realized_quote is not None]
    recent = closed[:WIN_RATE_TRADES]
    return Closed(
        realized=sum(closed, Decimal(0)),
        count=len(closed),
        win_rate=sum(1 for r in recent if r > 0) / len(recent) if recent else 0.0,
        win_rate_over=len(recent),
    )


def unrealized(positions: dict[str, Position], books: dict[str, PriceBook]) -> Decimal:
    """Open positions at their best bid, less what they cost (positions without a bid count nothing)."""
    return sum(
        (
            p.base_size * books[pid].bids[0].price - p.cost_quote
            for pid, p in positions.items()
            if books.get(pid) and books[pid].bids
        ),
        Decimal(0),
    )


class Ledger:
    def __init__(self, redis: Redis, keys: KeySpace, *, clock: Callable[[], float] = time.time):
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.stream = keys.key("proposals")
        self.positions_key = keys.key("positions")
        self.trades_key = keys.key("trades")
        self.halted_key = keys.key("halted")
        self._intake = redis.register_script(INTAKE_LUA)
        self._record_if = redis.register_script(RECORD_IF_LUA)

    def outcome_key(self, proposal_id: str) -> str:
        return self.keys.key("outcome", proposal_id)

    async def accept(self, proposal: Proposal) -> Outcome | None:
        """Queue a proposal seen for the first time (None); a proposal_id seen before gets its first outcome."""
        now = repr(self.clock())
        existing = await self._intake(
            keys=[self.outcome_key(proposal.proposal_id), self.stream],
            args=[proposal.model_dump_json(), now, proposal.proposal_id],
        )
        if not existing:
            return None
        return self._outcome(proposal.proposal_id, dict(zip(existing[::2], existing[1::2], strict=True)))

    async def outcome(self, proposal_id: str) -> Outcome | None:
        raw = await self.redis.hgetall(self.outcome_key(proposal_id))
        return self._outcome(proposal_id, raw) if raw else None

    async def proposal(self, proposal_id: str) -> Proposal | None:
        raw = await self.redis.hget(self.outcome_key(proposal_id), "proposal")
        return Proposal.model_validate_json(raw) if raw else None

    async def record(self, proposal_id: str, status: Status, **fields: str | None) -> None:
        values = {"status": status, "updated_at": repr(self.clock())} | {
            k: v for k, v in fields.items() if v is not None
        }
        await self.redis.hset(self.outcome_key(proposal_id), mapping=values)

    async def record_if(
        self, proposal_id: str, status: Status, *, when: tuple[Status, ...], **fields: str
    ) -> str | None:
        """Record `status` only while the outcome is one of `when`; the status found (None for no such proposal)."""
        values = {"status": status, "updated_at": repr(self.clock())} | fields
        args = [str(len(when)), *when, *(item for pair in values.items() for item in pair)]
        found = await self._record_if(keys=[self.outcome_key(proposal_id)], args=args)
        return found.decode() if found else None

    async def positions(self) -> dict[str, Position]:
        products = sorted(p.decode() for p in await self.redis.smembers(self.positions_key))
        if not products:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for product_id in products:
            pipe.get(self.keys.key("position", product_id))
        raws = await pipe.execute()
        return {p: Position.model_validate_json(raw) for p, raw in zip(products, raws, strict=True) if raw}

    async def open_position(self, position: Position, trade: Trade, proposal_id: str, order_id: str) -> None:
        """The buy's trade, the position (added to an open one of the same product) and the outcome, together."""
        current = (await self.positions()).get(position.product_id)
        if current is not None:
            size = current.base_size + position.base_size
            cost = current.cost_quote + position.cost_quote
            position = current.model_copy(
                update={
                    "base_size": size,
                    "cost_quote": cost,
                    "fees_quote": current.fees_quote + position.fees_quote,
                    "entry_price": (cost / size) if size else position.entry_price,
                }
            )
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.key("position", position.product_id), position.model_dump_json())
        pipe.sadd(self.positions_key, position.product_id)
        self._add_trade(pipe, trade)
        pipe.hset(
            self.outcome_key(proposal_id),
            mapping={"status": "filled", "order_id": order_id, "updated_at": repr(self.clock())},
        )
        await pipe.execute()

    async def mark_exiting(self, position: Position, key: str | None) -> Position:
        """Record the exit about to be sent, so whoever finishes it finds the same order (None: none is out)."""
        marked = position.model_copy(update={"exit_key": key})
        await self.redis.set(self.keys.key("position", position.product_id), marked.model_dump_json())
        return marked

    async def close_position(self, product_id: str, trade: Trade, outcome_of: str, status: Status) -> None:
        """The exit's trade, the position gone, the exit time for the cooldown and the outcome, together."""
        pipe = self.redis.pipeline(transaction=True)
        if trade.realized_quote is not None:
            day = self.keys.key("realized", str(int(trade.at // 86_400)))
            pipe.incrbyfloat(day, float(trade.realized_quote))
            pipe.expire(day, 3 * 86_400)
        pipe.delete(self.keys.key("position", product_id))
        pipe.srem(self.positions_key, product_id)
        pipe.hset(self.keys.key("last_exit"), product_id, repr(trade.at))
        self._add_trade(pipe, trade)
        pipe.hset(
            self.outcome_key(outcome_of),
            mapping={"status": status, "order_id": trade.order_id, "updated_at": repr(self.clock())},
        )
        await pipe.execute()

    def _add_trade(self, pipe: Pipeline, trade: Trade) -> None:
        """A hash per trade, and its id in a sorted set by time."""
        fields = {k: str(v) for k, v in trade.model_dump(mode="json").items() if v is not None}
        pipe.hset(self.keys.key("trade", trade.trade_id), mapping=fields)
        pipe.zadd(self.trades_key, {trade.trade_id: trade.at})

    async def trades(self, *, since: float = 0, limit: int = 500) -> list[Trade]:
        """The newest trades first, since a time."""
        ids = await self.redis.zrevrangebyscore(self.trades_key, "+inf", since, start=0, num=limit)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for trade_id in ids:
            pipe.hgetall(self.keys.key("trade", trade_id.decode()))
        return [
            Trade.model_validate({k.decode(): v.decode() for k, v in raw.items()})
            for raw in await pipe.execute()
            if raw
        ]

    async def trades_last_hour(self) -> int:
        """Trades in the last 3600 s, from the ledger: right straight after a restart."""
        return int(await self.redis.zcount(self.trades_key, self.clock() - HOUR_S, "+inf"))

    async def realized_today(self) -> Decimal:
        """Realised PnL of today's (UTC) exits, kept as they happen."""
        raw = await self.redis.get(self.keys.key("realized", str(self.today())))
        return Decimal(raw.decode()) if raw else Decimal(0)

    async def last_exits(self) -> dict[str, float]:
        raw = await self.redis.hgetall(self.keys.key("last_exit"))
        return {k.decode(): float(v) for k, v in raw.items()}

    async def halted(self) -> bool:
        return bool(await self.redis.exists(self.halted_key))

    async def set_halted(self, halted: bool, reason: str = "") -> None:
        """Halt, or resume: a resume also lets trading go on past today's loss limit, until the next UTC day."""
        if halted:
            await self.redis.set(self.halted_key, reason or "halted")
            return
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.halted_key)
        pipe.set(self.keys.key("resumed_day"), str(self.today()))
        await pipe.execute()

    async def resumed_today(self) -> bool:
        return await self.redis.get(self.keys.key("resumed_day")) == str(self.today()).encode()

    def today(self) -> int:
        """The current UTC day, as days since the epoch."""
        return int(self.clock() // 86_400)

    @staticmethod
    def _outcome(proposal_id: str, raw: dict[bytes, bytes]) -> Outcome:
        fields = {k.decode(): v.decode() for k, v in raw.items() if k != b"proposal"}
        return Outcome(proposal_id=proposal_id, **fields)  # type: ignore[arg-type]
