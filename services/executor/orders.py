"""From a queued proposal to a recorded trade: risk, the order (idempotent by a client_order_id derived from the
proposal), following it to a terminal state, and the ledger. Exits of open positions go the same way."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Literal

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from services.executor.ledger import GROUP, Ledger, Position, Trade, unrealized
from services.executor.metrics import ExecutorMetrics
from services.executor.risk import Approved, Book, Rejected, assess
from services.executor.settings import ExecutorSettings
from shared.errors import RetryableError, TraderError
from shared.exchange.client import ExchangeClient
from shared.exchange.errors import ExchangeRejected, OrderOutcomeUnknown
from shared.exchange.models import MarketIoc, Order, OrderConfiguration, Product
from shared.proposal import Proposal

log = logging.getLogger(__name__)

ORDER_NAMESPACE = uuid.UUID("6a3c2f0e-91b4-4d7e-8c55-1f0e2d9b7a41")
TERMINAL = {"FILLED", "CANCELLED", "EXPIRED", "FAILED"}
FOLLOW_S = 30.0
FOLLOW_EVERY_S = 0.1
RESENDS = 3
RETRIES = 3
RETRY_AFTER_S = 0.5
PRODUCT_TTL_S = 60.0


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
        """Read the intake stream through the group; entries a dead worker left pending are claimed first."""
        await self.ensure_group()
        while True:
            try:
                _, claimed, _ = await self.redis.xautoclaim(
                    self.ledger.stream, GROUP, self.consumer, min_idle_time=self.claim_idle_ms, count=10
                )
                entries = list(claimed)
                if not entries:
                    batches = await self.redis.xreadgroup(
                        GROUP, self.consumer, {self.ledger.stream: ">"}, count=10, block=1000
                    )
                    entries = [entry for _, found in batches for entry in found]
                for entry_id, fields in entries:
                    await self.handle(entry_id, fields[b"proposal_id"].decode())
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad entry or a Redis hiccup must not stop the worker; it is retried
                log.exception("processing proposals failed; retrying")
                await asyncio.sleep(1)

    async def handle(self, entry_id: bytes, proposal_id: str) -> None:
        """Process one entry; it is acknowledged only once its outcome is recorded."""
        outcome = await self.ledger.outcome(proposal_id)
        proposal = await self.ledger.proposal(proposal_id)
        if outcome is None or proposal is None or outcome.status not in ("pending", "ordered"):
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
        await self.redis.xack(self.ledger.stream, GROUP, entry_id)

    async def process(self, proposal: Proposal, *, resumed: bool, received_at: float) -> None:
        pid = proposal.proposal_id
        book = await self.book()
        product = await self.product(proposal.product_id)
        decision = assess(proposal, book=book, product=product, config=self.config, now=self.clock())
        if isinstance(decision, Rejected) and not resumed:
            self.metrics.rejected.labels(decision.reason).inc()
            await self.ledger.record(pid, "rejected", reason=decision.reason, detail=decision.detail)
            log.info("proposal %s rejected: %s (%s)", pid, decision.reason, decision.detail)
            return
        key = f"proposal:{pid}"
        await self.ledger.record(pid, "ordered", client_order_id=client_order_id(key))
        if proposal.side == "SELL":
            position = (await self.ledger.positions()).get(proposal.product_id)
            if position is None:
                await self.ledger.record(pid, "rejected", reason="no_position", detail="the position closed meanwhile")
                return
            await self.exit(position, reason="proposal", key=key, outcome_of=pid, status="filled")
            return
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

    async def exit(self, position: Position, *, reason: str, key: str, outcome_of: str, status: str) -> None:
        """Sell the whole position at market, under the same idempotency rules, and record the realised PnL."""
        order = await self.order(key, position.product_id, "SELL", base_size=position.base_size, resumed=True)
        if order is None or order.status != "FILLED" or not order.filled_size:
            self.metrics.orders.labels("SELL", (order.status if order else "none").lower()).inc()
            log.warning("exit of %s did not fill (%s)", position.product_id, order.status if order else "no order")
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
        """The product's rules (status, flags, increments, minimums), fetched at most once a minute."""
        cached = self._products.get(product_id)
        if cached is not None and self.clock() - cached[0] < PRODUCT_TTL_S:
            return cached[1]
        try:
            product: Product | None = await self.exchange.get_product(product_id)
        except ExchangeRejected:
            product = None
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
    """Exit open positions at their stop-loss, take-profit or time stop (checked at the best bid)."""
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
                    if book is None or not book.bids:
                        continue
                    reason = exit_reason(position, bid=book.bids[0].price, now=now)
                    if reason:
                        key = f"exit:{position.proposal_id}:{position.opened_at!r}"
                        await executor.exit(
                            position, reason=reason, key=key, outcome_of=position.proposal_id, status="exited"
                        )
        except asyncio.CancelledError:
            raise
        except TraderError as exc:
            log.warning("watching positions failed this round: %s", exc.message)
        except Exception:  # keep watching; the next round retries
            log.exception("watching positions failed this round")
        await asyncio.sleep(interval_s)


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
