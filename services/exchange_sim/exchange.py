"""The simulated exchange: catalog, market and account together, behind one lock."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.exchange_sim.catalog import ProductSpec, build_catalog
from services.exchange_sim.clock import SimClock
from services.exchange_sim.market import Market
from services.exchange_sim.matching import (
    Account,
    OrderRejected,
    SimFill,
    SimOrder,
    advance_resting,
    cancel,
    parse_request,
    place,
)
from services.exchange_sim.settings import SimSettings
from services.exchange_sim.store import SimStore, StoreUnavailable

# Depth near the touch, in minutes of the product's typical volume: what a market order eats into.
DEPTH_MINUTES = 30


@dataclass(frozen=True, slots=True)
class PlaceResult:
    order: SimOrder | None
    rejected: OrderRejected | None
    repeated: bool


class SimExchange:
    """Every change is computed on a copy, saved to Redis in one transaction, and only then made live in
    memory: an order that could not be saved never happened, so a retry with its client_order_id places it
    once. After a failed save memory is reloaded from Redis before the next change, in case the save did land.
    """

    def __init__(self, settings: SimSettings, store: SimStore, clock: SimClock):
        config = settings.exchange_sim
        self.config = config
        self.store = store
        self.clock = clock
        self.catalog = build_catalog(settings.sim_seed, config.products)
        self.products = {p.product_id: p for p in self.catalog}
        self.market = Market(self.catalog, seed=settings.sim_seed, history_days=config.history_days)
        self.account = Account()
        self.open_orders: dict[str, SimOrder] = {}
        self.lock = asyncio.Lock()
        self._reload = False

    async def load(self) -> None:
        """Take the account and the resting orders back from Redis."""
        self.account = await self.store.load_account(self.config.starting_balances)
        self.open_orders = {o.order_id: o for o in await self.store.open_order_list()}
        self._reload = False

    async def _commit(self, account: Account, orders: list[SimOrder], fills: list[SimFill]) -> None:
        """Save, then make the new account live; on a failed save, reload from Redis before the next change."""
        try:
            await self.store.save(account, orders, fills)
        except StoreUnavailable:
            self._reload = True
            raise
        self.account = account
        for order in orders:
            if order.status == "OPEN":
                self.open_orders[order.order_id] = order
            else:
                self.open_orders.pop(order.order_id, None)

    async def _fresh(self) -> None:
        if self._reload:
            await self.store.guarded(self.load())

    def touch(self, product: ProductSpec, now: float) -> tuple[Decimal, Decimal]:
        """Best bid and ask on the product's price increment."""
        bid, ask = self.market.best_bid_ask(product.product_id, now)
        step = product.quote_increment
        bid_d = (Decimal(repr(bid)) / step).to_integral_value(rounding="ROUND_FLOOR") * step
        ask_d = (Decimal(repr(ask)) / step).to_integral_value(rounding="ROUND_CEILING") * step
        if ask_d <= bid_d:
            ask_d = bid_d + step
        return bid_d, ask_d

    def depth(self, product: ProductSpec, now: float) -> Decimal:
        return Decimal(repr(product.volume * DEPTH_MINUTES * self.market.price(product.product_id, now)))

    async def place_order(self, body: Any) -> PlaceResult:
        """Create an order; a client_order_id seen before gives back the original order, never a second one.

        Raises BadOrderRequest when the body is not an order request at all."""
        try:
            request = parse_request(body)
        except OrderRejected as rejected:
            return PlaceResult(None, rejected, False)
        async with self.lock:
            await self._fresh()
            existing = await self.store.guarded(self.store.order_id_for(request.client_order_id))
            if existing is not None:
                return PlaceResult(await self.order(existing), None, repeated=True)
            product = self.products.get(request.product_id)
            if product is None:
                return PlaceResult(
                    None, OrderRejected("INVALID_PRODUCT_ID", f"product {request.product_id} is not supported"), False
                )
            now = self.clock.now()
            bid, ask = self.touch(product, now)
            account = self.account.copy()
            try:
                order, fills = place(
                    account,
                    request,
                    product=product,
                    bid=bid,
                    ask=ask,
                    depth=self.depth(product, now),
                    now=now,
                    maker_pct=self.config.fees.maker_pct,
                    taker_pct=self.config.fees.taker_pct,
                    order_id=str(uuid.uuid4()),
                    trade_id=str(uuid.uuid4()),
                )
            except OrderRejected as rejected:
                return PlaceResult(None, rejected, False)
            await self._commit(account, [order], fills)
            return PlaceResult(order, None, False)

    async def match_resting(self) -> list[SimFill]:
        """Move the resting orders on with the market: fills, triggered stops, expiries."""
        if not self.open_orders and not self._reload:
            return []
        async with self.lock:
            await self._fresh()
            now = self.clock.now()
            account = self.account.copy()
            changed: list[SimOrder] = []
            fills: list[SimFill] = []
            for resting in list(self.open_orders.values()):
                order = dataclasses.replace(resting)
                product = self.products[order.product_id]
                bid, ask = self.touch(product, now)
                moved, fill = advance_resting(
                    account,
                    order,
                    product,
                    bid=bid,
                    ask=ask,
                    now=now,
                    maker_pct=self.config.fees.maker_pct,
                    taker_pct=self.config.fees.taker_pct,
                    trade_id=str(uuid.uuid4()),
                )
                if moved:
                    changed.append(order)
                if fill is not None:
                    fills.append(fill)
            if changed:
                await self._commit(account, changed, fills)
            return fills

    async def cancel_orders(self, order_ids: list[str]) -> list[tuple[str, str | None]]:
        """Cancel each order; (order_id, failure reason or None)."""
        results = []
        async with self.lock:
            await self._fresh()
            account = self.account.copy()
            changed: dict[str, SimOrder] = {}
            for order_id in order_ids:
                known = (
                    changed.get(order_id)
                    or self.open_orders.get(order_id)
                    or await self.store.guarded(self.store.order(order_id))
                )
                if known is None:
                    results.append((order_id, "UNKNOWN_CANCEL_ORDER"))
                    continue
                order = dataclasses.replace(known)
                reason = cancel(account, order)
                results.append((order_id, reason))
                if reason is None:
                    changed[order_id] = order
            if changed:
                await self._commit(account, list(changed.values()), [])
        return results

    async def order(self, order_id: str) -> SimOrder | None:
        return self.open_orders.get(order_id) or await self.store.guarded(self.store.order(order_id))
