"""The simulated account in Redis: balances, holds, every order and every fill."""

from __future__ import annotations

from decimal import Decimal

import orjson
from redis.asyncio import Redis

from services.exchange_sim.matching import Account, SimFill, SimOrder
from shared.redis import KeySpace


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
        await pipe.execute()

    async def all_orders(self) -> list[SimOrder]:
        """Every order, newest first."""
        ids = [i.decode() for i in await self.redis.zrevrange(self.orders, 0, -1)]
        if not ids:
            return []
        raws = await self.redis.mget([self._order(i) for i in ids])
        return [SimOrder.from_record(orjson.loads(raw)) for raw in raws if raw]

    async def all_fills(self) -> list[SimFill]:
        """Every fill, newest first."""
        return [fill_from_record(raw) for raw in await self.redis.zrevrange(self.fills, 0, -1)]
