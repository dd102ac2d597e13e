"""From a queued proposal to a recorded trade: risk, the order (idempotent by a client_order_id derived from the
proposal), following it to a terminal state, and the ledger. Exits of open positions go the same way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.executor.ledger import GROUP, Ledger, Position, Status, Trade, unrealized
from services.executor.metrics import ExecutorMetrics
from services.executor.risk import Approved, Book, Rejected, assess
from services.executor.settings import ExecutorSettings
from shared.errors import RetryableError, TraderError
from shared.exchange.client import ExchangeClient
from shared.exchange.errors import ExchangeRejected, OrderOutcomeUnknown
from shared.exchange.models import MarketIoc, Order, OrderConfiguration, Product
from shared.lock import RedisLock
from shared.proposal import Proposal

log = logging.getLogger(__name__)

ORDER_NAMESPACE = uuid.UUID("6a3c2f0e-91b4-4d7e-8c55-1f0e2d9b7a41")
TERMINAL = {"FILLED", "CANCELLED", "EXPIRED", "FAILED"}
OPEN: tuple[Status, ...] = ("pending", "ordered")  # a proposal's outcomes that still need a worker
FOLLOW_S = 30.0
FOLLOW_EVERY_S = 0.1
RESENDS = 3
RETRIES = 3
RETRY_AFTER_S = 0.5
PRODUCT_TTL_S = 60.0
# Locks across workers and replicas (positions, buy decisions): a dead holder frees one after LOCK_S.
LOCK_S = 15.0
# Proposals one worker works on at once.
IN_FLIGHT = 16
LOCK_WAIT_S = 30.0
# How long a buy that has its turn waits for an exit of its product before giving the turn back.
EXIT_WAIT_IN_TURN_S = 1.0


class LockBusy(RetryableError):
    """A lock stayed taken for as long as its caller could wait."""


def client_order_id(key: str) -> str:
    """The order's dedupe key at the exchange, derived from what it is for: a resend can never make a second."""
    return str(uuid.uuid5(ORDER_NAMESPACE, key))


class Executor:
    def __init__(
        self,
        redis: Redis,
        *,
        ledger: Ledger,
        exchange: ExchangeClient,
        settings: ExecutorSettings,
        metrics: ExecutorMetrics,
        consumer: str,
        clock: Callable[[], float] = time.time,
    ):
        self.redis = redis
        self.ledger = ledger
        self.exchange = exchange
        self.config = settings.risk
        self.claim_idle_ms = int(settings.worker.claim_idle_s * 1000)
        self.metrics = metrics
        self.consumer = consumer
        self.clock = clock
        self._products: dict[str, tuple[float, Product | None]] = {}

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.ledger.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def work_forever(self) -> None:
        """Read the intake stream through the group, entries a dead worker left pending first, and work on up to
        IN_FLIGHT of them at once: a proposal stuck on a slow exchange call holds up only itself, and two for the
        same product take turns on its position lock."""
        await self.ensure_group()
        running: dict[bytes, asyncio.Task[None]] = {}
        try:
            while True:
                try:
                    room = IN_FLIGHT - len(running)
                    entries = await self._next_entries(room, block_ms=200 if running else 1000) if room > 0 else []
                    for entry_id, fields in entries:
                        if entry_id not in running:
                            task = asyncio.create_task(self._handle_logged(entry_id, fields[b"proposal_id"].decode()))
                            running[entry_id] = task
                            task.add_done_callback(lambda _, eid=entry_id: running.pop(eid, None))
                    if running and (room <= len(entries) or not entries):
                        await asyncio.wait(set(running.values()), timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a Redis hiccup must not stop the worker; the entries stay pending
                    log.exception("reading proposals failed; retrying")
                    await asyncio.sleep(1)
        finally:
            for task in running.values():
                task.cancel()

    async def _next_entries(self, room: int, *, block_ms: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        _, claimed, _ = await self.redis.xautoclaim(
            self.ledger.stream, GROUP, self.consumer, min_idle_time=self.claim_idle_ms, count=room
        )
        if claimed:
            return list(claimed)
        batches = await self.redis.xreadgroup(
            GROUP, self.consumer, {self.ledger.stream: ">"}, count=room, block=block_ms
        )
        return [entry for _, found in batches for entry in found]

    async def _handle_logged(self, entry_id: bytes, proposal_id: str) -> None:
        try:
            await self.handle(entry_id, proposal_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # the entry stays pending and is claimed again
            log.exception("processing proposal %s failed; it is retried", proposal_id)

    async def handle(self, entry_id: bytes, proposal_id: str) -> None:
        """Process one entry; it is acknowledged only once its outcome is recorded."""
        outcome = await self.ledger.outcome(proposal_id)
        proposal = await self.ledger.proposal(proposal_id)
        if outcome is None or proposal is None or outcome.status not in OPEN:
            await self.redis.xack(self.ledger.stream, GROUP, entry_id)
            return
        for attempt in range(1, RETRIES + 1):
            try:
                await self.process(proposal, resumed=outcome.status == "ordered", received_at=outcome.received_at)
                break
            except RetryableError as exc:  # no quota, the exchange down, an order's outcome unknown: again soon
                if attempt == RETRIES:
                    log.warning("proposal %s not done yet (%s); it stays pending for a retry", proposal_id, exc.message)
                    return
                await asyncio.sleep(RETRY_AFTER_S * attempt)
                outcome = await self.ledger.outcome(proposal_id) or outcome
                if outcome.status not in OPEN:  # another worker decided it meanwhile
                    break
        await self.redis.xack(self.ledger.stream, GROUP, entry_id)

    async def process(self, proposal: Proposal, *, resumed: bool, received_at: float) -> None:
        """Decide and act on a proposal under its product's lock, from its outcome as it is then: a worker that
        claimed the same entry meanwhile (the first one was slow, not dead) finds it done and leaves it."""
        if not resumed and await self._rejected_as_stale(proposal):
            return
        product = await self.product(proposal.product_id)  # its rules, cached for a minute: before the turn
        # A buy adds to what the global limits count (trades per hour, open positions, total cost, balance): buys
        # are decided and placed one at a time across workers and replicas; exits and sells need no such turn.
        entries: contextlib.AbstractAsyncContextManager[None] = contextlib.nullcontext()
        position_wait_s = LOCK_WAIT_S
        if proposal.side == "BUY":
            valid_s = LOCK_WAIT_S if resumed else proposal.expires_at.timestamp() - self.clock()
            entries = self.lock("entries", wait_s=max(min(LOCK_WAIT_S, valid_s), 0))  # not past its expiry
            position_wait_s = EXIT_WAIT_IN_TURN_S
        try:
            # The turn first, the product's lock after it: an exit (a stop-loss) never waits behind a buy that is
            # waiting for its turn. The product's lock is then held only by an exit or a sell of the product; a buy
            # does not keep the turn through that exit, it gives the turn back and comes again.
            async with entries, self.lock(f"position:{proposal.product_id}", wait_s=position_wait_s):
                await self._decide(proposal, product, resumed=resumed, received_at=received_at)
        except LockBusy:
            if not resumed and await self._rejected_as_stale(proposal):
                return
            raise

    async def _rejected_as_stale(self, proposal: Proposal) -> bool:
        """Reject an expired proposal without waiting for a turn, so a backlog of old ones drains at once. True
        when nothing is left to do (rejected now, or decided by another worker); False while it is valid, or when
        a worker ordered it meanwhile (that one is resumed, never rejected)."""
        if not proposal.expired(datetime.fromtimestamp(self.clock(), UTC)):
            return False
        stale = Rejected("expired", f"expired at {proposal.expires_at.isoformat()}")
        pid = proposal.proposal_id
        found = await self.ledger.record_if(
            pid, "rejected", when=("pending",), reason=stale.reason, detail=stale.detail
        )
        if found == "pending":
            self._rejected(pid, stale)
        return found != "ordered"

    async def _decide(self, proposal: Proposal, product: Product | None, *, resumed: bool, received_at: float) -> None:
        """The decision and the order, under the locks."""
        pid = proposal.proposal_id
        outcome = await self.ledger.outcome(pid)
        if outcome is None or outcome.status not in OPEN:
            return
        resumed = resumed or outcome.status == "ordered"
        if not resumed and await self._rejected_as_stale(proposal):  # it expired while waiting for its turn
            return
        book = await self.book()
        decision = assess(proposal, book=book, product=product, config=self.config, now=self.clock())
        if isinstance(decision, Rejected) and not resumed:
            await self.ledger.record(pid, "rejected", reason=decision.reason, detail=decision.detail)
            self._rejected(pid, decision)
            return
        key = f"proposal:{pid}"
        found = await self.ledger.record_if(pid, "ordered", when=OPEN, client_order_id=client_order_id(key))
        if found not in OPEN:  # rejected as stale, without the locks, since it was read
            return
        held = (await self.ledger.positions()).get(proposal.product_id)
        if proposal.side == "SELL":
            if held is None:
                await self.ledger.record(pid, "rejected", reason="no_position", detail="the position closed meanwhile")
                return
            await self._exit_held(held, reason="proposal", key=key, outcome_of=pid, status="filled")
            return
        if held is not None and held.exit_key is not None:
            raise RetryableError(f"{proposal.product_id}: the position is being exited; buying after that")
        approved = decision if isinstance(decision, Approved) else None
        order = await self.order(key, proposal.product_id, "BUY", approved=approved, resumed=resumed)
        if order is None:
            await self.ledger.record(pid, "rejected", reason="no_order", detail="no order was found or placed")
            return
        self.metrics.order_latency.observe(max(self.clock() - received_at, 0))
        if order.status != "FILLED" or not order.filled_size:
            self.metrics.orders.labels("BUY", order.status.lower()).inc()
            await self.ledger.record(pid, "failed", reason=f"order {order.status.lower()}", order_id=order.order_id)
            return
        trade, position = self._bought(proposal, order)
        await self.ledger.open_position(position, trade, pid, order.order_id)
        self.metrics.orders.labels("BUY", "filled").inc()
        self.metrics.trades.labels("BUY").inc()

    def _rejected(self, proposal_id: str, rejection: Rejected) -> None:
        """Count and log a rejection recorded in the ledger."""
        self.metrics.rejected.labels(rejection.reason).inc()
        log.info("proposal %s rejected: %s (%s)", proposal_id, rejection.reason, rejection.detail)

    @contextlib.asynccontextmanager
    async def lock(self, name: str, *, wait_s: float = LOCK_WAIT_S) -> AsyncIterator[None]:
        """A lock across workers and replicas, waited for: `position:<product>` for one change at a time to a
        position (a buy adding to it, or its exit), `entries` for one buy decision at a time."""
        lock = RedisLock(self.redis, self.ledger.keys.key("lock", name), owner=self.consumer, timeout_s=LOCK_S)
        deadline = time.monotonic() + wait_s
        while True:
            async with lock.held() as got:
                if got:
                    yield
                    return
            if time.monotonic() > deadline:
                raise LockBusy(f"{name} stayed locked for {wait_s:.0f} s")
            await asyncio.sleep(0.05)

    async def exit(self, position: Position, *, reason: str, key: str, outcome_of: str, status: str) -> None:
        """Sell the whole position at market, under the same idempotency rules, and record the realised PnL.

        Under the product's lock, on the position as it is then: one that another worker closed meanwhile is
        left alone, and an exit already sent (its key recorded first) is looked up rather than sent again."""
        async with self.lock(f"position:{position.product_id}"):
            current = (await self.ledger.positions()).get(position.product_id)
            if current is None or current.opened_at != position.opened_at:
                return
            await self._exit_held(current, reason=reason, key=key, outcome_of=outcome_of, status=status)

    async def _exit_held(self, position: Position, *, reason: str, key: str, outcome_of: str, status: str) -> None:
        """The exit of a position read under its lock."""
        resumed = position.exit_key is not None  # an earlier attempt may have sent its order: looked up first
        if not resumed:  # a new attempt: a new order, its key recorded before it is sent
            position = await self.ledger.mark_exiting(position, f"{key}:{uuid.uuid4().hex[:8]}")
        await self._sell(position, reason=reason, outcome_of=outcome_of, status=status, resumed=resumed)

    async def _sell(self, position: Position, *, reason: str, outcome_of: str, status: str, resumed: bool) -> None:
        assert position.exit_key is not None
        order = await self.order(
            position.exit_key, position.product_id, "SELL", base_size=position.base_size, resumed=resumed
        )
        if order is None or order.status != "FILLED" or not order.filled_size:
            self.metrics.orders.labels("SELL", (order.status if order else "none").lower()).inc()
            log.warning("exit of %s did not fill (%s)", position.product_id, order.status if order else "no order")
            if order is None or order.status in TERMINAL:  # nothing was sold: the next attempt sends a new order
                await self.ledger.mark_exiting(position, None)
            return
        sold = trade_of(
            order, product_id=position.product_id, side="SELL", proposal_id=position.proposal_id, at=self.clock()
        )
        trade = sold.model_copy(
            update={"realized_quote": sold.quote_value - sold.fees_quote - position.cost_quote, "exit_reason": reason}
        )
        await self.ledger.close_position(position.product_id, trade, outcome_of, status)  # type: ignore[arg-type]
        self.metrics.orders.labels("SELL", "filled").inc()
        self.metrics.trades.labels("SELL").inc()
        log.info("exited %s (%s): realised %s", position.product_id, reason, trade.realized_quote)

    async def order(
        self,
        key: str,
        product_id: str,
        side: str,
        *,
        approved: Approved | None = None,
        base_size: Decimal | None = None,
        resumed: bool,
    ) -> Order | None:
        """The order for `key`: found on the exchange when an earlier attempt may have placed it, else placed
        (resent with the same body while its outcome is unknown), then followed to a terminal state."""
        coid = client_order_id(key)
        if resumed:
            found = await self.exchange.find_order(coid, product_id=product_id)
            if found is not None:
                return await self.follow(found)
        if approved is None and base_size is None:
            return None
        ioc = MarketIoc(quote_size=approved.quote_size) if approved else MarketIoc(base_size=base_size)
        for attempt in range(1, RESENDS + 1):
            try:
                created = await self.exchange.create_order(
                    client_order_id=coid,
                    product_id=product_id,
                    side=side,  # type: ignore[arg-type]
                    configuration=OrderConfiguration(market_market_ioc=ioc),
                )
            except OrderOutcomeUnknown:
                if attempt == RESENDS:
                    raise
                continue
            except ExchangeRejected as exc:
                self.metrics.orders.labels(side, "refused").inc()
                log.warning("order %s refused by the exchange: %s", coid, exc.message)
                return None
            assert created.success_response is not None
            return await self.follow(await self.exchange.get_order(created.success_response.order_id))
        return None

    async def product(self, product_id: str) -> Product | None:
        """The product's rules (status, flags, increments, minimums), fetched at most once a minute; the last
        ones read while a fresh read is out of reach (quota short, the exchange down): the exchange still refuses
        an order that breaks rules changed meanwhile."""
        cached = self._products.get(product_id)
        if cached is not None and self.clock() - cached[0] < PRODUCT_TTL_S:
            return cached[1]
        try:
            product: Product | None = await self.exchange.get_product(product_id)
        except ExchangeRejected:
            product = None
        except RetryableError:
            if cached is None:
                raise
            product = cached[1]  # kept another minute rather than asked for again at each proposal
        self._products[product_id] = (self.clock(), product)
        return product

    async def follow(self, order: Order) -> Order:
        deadline = time.monotonic() + FOLLOW_S
        while order.status not in TERMINAL and time.monotonic() < deadline:
            await asyncio.sleep(FOLLOW_EVERY_S)
            order = await self.exchange.get_order(order.order_id)
        return order

    async def book(self) -> Book:
        positions = await self.ledger.positions()
        accounts = await self.exchange.accounts()
        return Book(
            halted=await self.ledger.halted(),
            trades_last_hour=await self.ledger.trades_last_hour(),
            positions_quote={p: pos.cost_quote for p, pos in positions.items()},
            positions_base={p: pos.base_size for p, pos in positions.items()},
            last_exit_at=await self.ledger.last_exits(),
            available={a.currency: a.available_balance.value for a in accounts.accounts},
            realized_today_quote=await self.ledger.realized_today(),
            loss_resumed_today=await self.ledger.resumed_today(),
        )

    def _bought(self, proposal: Proposal, order: Order) -> tuple[Trade, Position]:
        now = self.clock()
        trade = trade_of(order, product_id=proposal.product_id, side="BUY", proposal_id=proposal.proposal_id, at=now)
        position = Position(
            product_id=proposal.product_id,
            base_size=trade.base_size,
            cost_quote=trade.quote_value + trade.fees_quote,
            entry_price=trade.price,
            fees_quote=trade.fees_quote,
            opened_at=now,
            proposal_id=proposal.proposal_id,
            stop_loss_pct=proposal.stop_loss_pct,
            take_profit_pct=proposal.take_profit_pct,
            time_stop_s=proposal.time_stop_s,
        )
        return trade, position


def trade_of(order: Order, *, product_id: str, side: Literal["BUY", "SELL"], proposal_id: str, at: float) -> Trade:
    """A filled order as a trade of the ledger: size, average price, value and fees."""
    price = order.average_filled_price or Decimal(0)
    return Trade(
        trade_id=order.order_id,
        product_id=product_id,
        side=side,
        base_size=order.filled_size,
        price=price,
        quote_value=order.filled_value or order.filled_size * price,
        fees_quote=order.total_fees or Decimal(0),
        at=at,
        order_id=order.order_id,
        proposal_id=proposal_id,
    )


async def watch_positions(executor: Executor, *, interval_s: float) -> None:
    """Exit open positions at their stop-loss, take-profit or time stop (checked at the best bid).

    Each exit runs on its own, so one held up (its product's lock taken, a call hanging until the client's
    timeout) delays neither the other exits nor the next round's checks."""
    exiting: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            try:
                positions = await executor.ledger.positions()
                if not positions:
                    executor.metrics.unrealized.set(0)
                else:
                    books = {b.product_id: b for b in await executor.exchange.best_bid_ask(list(positions))}
                    now = executor.clock()
                    executor.metrics.unrealized.set(float(unrealized(positions, books)))
                    for product_id, position in positions.items():
                        book = books.get(product_id)
                        if product_id in exiting or book is None or not book.bids:
                            continue
                        reason = exit_reason(position, bid=book.bids[0].price, now=now)
                        if reason:
                            task = asyncio.create_task(_exit_logged(executor, position, reason))
                            exiting[product_id] = task
                            task.add_done_callback(lambda _, pid=product_id: exiting.pop(pid, None))
            except asyncio.CancelledError:
                raise
            except TraderError as exc:
                log.warning("watching positions failed this round: %s", exc.message)
            except Exception:  # keep watching; the next round retries
                log.exception("watching positions failed this round")
            await asyncio.sleep(interval_s)
    finally:
        for task in exiting.values():
            task.cancel()


async def _exit_logged(executor: Executor, position: Position, reason: str) -> None:
    """One exit the watch decided on; a failure is logged and the next round tries again."""
    key = f"exit:{position.proposal_id}:{position.opened_at!r}"
    try:
        await executor.exit(position, reason=reason, key=key, outcome_of=position.proposal_id, status="exited")
    except asyncio.CancelledError:
        raise
    except TraderError as exc:
        log.warning("exit of %s (%s) failed this time: %s", position.product_id, reason, exc.message)
    except Exception:
        log.exception("exit of %s (%s) failed this time", position.product_id, reason)


def exit_reason(position: Position, *, bid: Decimal, now: float) -> str | None:
    """stop_loss, take_profit or time_stop when one is reached; None while the position stays open."""
    change_pct = float((bid - position.entry_price) / position.entry_price * 100) if position.entry_price else 0.0
    if change_pct <= -position.stop_loss_pct:
        return "stop_loss"
    if change_pct >= position.take_profit_pct:
        return "take_profit"
    if now - position.opened_at >= position.time_stop_s:
        return "time_stop"
    return None
