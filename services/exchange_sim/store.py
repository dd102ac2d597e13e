"""The simulated account in Redis: balances, holds, every order and every fill."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TypeVar

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.exchange_sim.matching import Account, SimFill, SimOrder
from shared.redis import KeySpace

T = TypeVar("T")
# Index entries read per Redis round trip while paging with filters.
SCAN_BATCH = 200


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a listing goes on: the position in the time index below the newest time its first page saw."""

    offset: int
    high: float

    def __str__(self) -> str:
        return f"{self.offset}:{self.high!r}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """Raises ValueError for anything but what __str__ writes."""
        offset, high = text.split(":")
        cursor = cls(int(offset), float(high))
        if cursor.offset < 0:
            raise ValueError(text)
        return cursor


class StoreUnavailable(Exception):
    """Redis failed; nothing was changed (the simulator answers 503, as Coinbase does when it cannot serve)."""


def fill_record(fill: SimFill) -> bytes:
    return orjson.dumps({k: (str(v) if isinstance(v, Decimal) else v) for k, v in fill.__dict__.items()})


def fill_from_record(raw: bytes) -> SimFill:
    data = orjson.loads(raw)
    for key in ("price", "size", "commission"):
        data[key] = Decimal(data[key])
    return SimFill(**data)


class SimStore:
    def __init__(self, redis: Redis, keys: KeySpace):
        self.redis = redis
        self.balances = keys.key("balances")
        self.holds = keys.key("holds")
        self.orders = keys.key("orders")
        self.open_orders = keys.key("open_orders")
        self.fills = keys.key("fills")
        self._order = lambda order_id: keys.key("order", order_id)
        self._client_order = lambda client_order_id: keys.key("client_order", client_order_id)

    async def load_account(self, starting: dict[str, Decimal]) -> Account:
        """The account as kept in Redis; the configured starting balances the first time."""
        if not await self.redis.exists(self.balances):
            await self.redis.hset(self.balances, mapping={k: str(v) for k, v in starting.items()})
        balances = await self.redis.hgetall(self.balances)
        holds = await self.redis.hgetall(self.holds)
        return Account(
            balances={k.decode(): Decimal(v.decode()) for k, v in balances.items()},
            holds={k.decode(): Decimal(v.decode()) for k, v in holds.items()},
        )

    async def open_order_list(self) -> list[SimOrder]:
        ids = [i.decode() for i in await self.redis.smembers(self.open_orders)]
        raws = await self.redis.mget([self._order(i) for i in ids]) if ids else []
        return [SimOrder.from_record(orjson.loads(raw)) for raw in raws if raw]

    async def order(self, order_id: str) -> SimOrder | None:
        raw = await self.redis.get(self._order(order_id))
        return SimOrder.from_record(orjson.loads(raw)) if raw else None

    async def order_id_for(self, client_order_id: str) -> str | None:
        raw = await self.redis.get(self._client_order(client_order_id))
        return raw.decode() if raw else None

    @staticmethod
    async def guarded(call: Awaitable[T]) -> T:
        """Await a Redis call, turning any Redis failure into StoreUnavailable."""
        try:
            return await call
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def save(self, account: Account, orders: list[SimOrder], fills: list[SimFill]) -> None:
        """Persist the account with the orders and fills that changed it, in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.balances, mapping={k: str(v) for k, v in account.balances.items()})
        if account.holds:
            pipe.hset(self.holds, mapping={k: str(v) for k, v in account.holds.items()})
        for order in orders:
            pipe.set(self._order(order.order_id), orjson.dumps(order.to_record()))
            pipe.set(self._client_order(order.client_order_id), order.order_id)
            pipe.zadd(self.orders, {order.order_id: order.created_time})
            if order.status == "OPEN":
                pipe.sadd(self.open_orders, order.order_id)
            else:
                pipe.srem(self.open_orders, order.order_id)
        for fill in fills:
            pipe.zadd(self.fills, {fill_record(fill): fill.trade_time})
        await self.guarded(pipe.execute())

    async def orders_page(
        self,
        keep: Callable[[SimOrder], bool],
        *,
        limit: int,
        cursor: Cursor | None,
        start: float | None,
        end: float | None,
    ) -> tuple[list[SimOrder], Cursor | None]:
        """Orders kept by `keep`, newest first, read from the time index: see `_page`."""

        async def load(ids: list[bytes]) -> list[SimOrder | None]:
            raws = await self.redis.mget([self._order(i.decode()) for i in ids])
            return [SimOrder.from_record(orjson.loads(raw)) if raw else None for raw in raws]

        return await self.guarded(self._page(self.orders, load, keep, limit, cursor, start, end))

    async def fills_page(
        self,
        keep: Callable[[SimFill], bool],
        *,
        limit: int,
        cursor: Cursor | None,
        start: float | None,
        end: float | None,
    ) -> tuple[list[SimFill], Cursor | None]:
        """Fills kept by `keep`, newest first, read from the time index: see `_page`."""

        async def load(records: list[bytes]) -> list[SimFill | None]:
            return [fill_from_record(raw) for raw in records]

        return await self.guarded(self._page(self.fills, load, keep, limit, cursor, start, end))

    async def _page(
        self,
        index: str,
        load: Callable[[list[bytes]], Awaitable[list[T | None]]],
        keep: Callable[[T], bool],
        limit: int,
        cursor: Cursor | None,
        start: float | None,
        end: float | None,
    ) -> tuple[list[T], Cursor | None]:
        """Up to `limit` items between `start` and `end` (Unix seconds), newest first, and the cursor of the next
        page (None when the index has no more). The first page pins the newest time it saw, so items added while
        a caller pages never shift the later pages. Only the entries up to the last one kept are read."""
        low = start if start is not None else "-inf"
        if cursor is None:
            top = await self.redis.zrevrangebyscore(
                index, end if end is not None else "+inf", low, start=0, num=1, withscores=True
            )
            if not top:
                return [], None
            cursor = Cursor(0, top[0][1])
        offset, high = cursor.offset, cursor.high
        found: list[T] = []
        while True:
            members = await self.redis.zrevrangebyscore(index, high, low, start=offset, num=SCAN_BATCH)
            for item in await load(members):
                offset += 1
                if item is not None and keep(item):
                    found.append(item)
                    if len(found) == limit:
                        more = await self.redis.zrevrangebyscore(index, high, low, start=offset, num=1)
                        return found, Cursor(offset, high) if more else None
            if len(members) < SCAN_BATCH:
                return found, None
