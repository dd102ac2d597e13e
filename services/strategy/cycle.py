"""One strategy cycle: universe -> market data -> signals -> proposals to the executor, each stage timed against
its budget; and the lease that lets exactly one replica run the cycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Literal

import httpx
from pydantic import BaseModel, ValidationError
from redis.asyncio import Redis

from services.strategy.conviction import Liquidity, Trigger, find_triggers, propose, ratio
from services.strategy.market_data import CandleStore, last_closed
from services.strategy.metrics import StrategyMetrics
from services.strategy.policy import PolicyStore
from services.strategy.settings import StrategySettings
from services.strategy.signals import evaluate, trend
from shared.errors import TraderError
from shared.exchange.client import ExchangeClient
from shared.lock import RedisLock
from shared.logging import cycle_id_var
from shared.proposal import PRODUCT_ID_PATTERN, Proposal
from shared.redis import KeySpace

log = logging.getLogger(__name__)

Result = Literal["evaluated", "no_new_data", "failed"]
PRODUCT_ID = re.compile(PRODUCT_ID_PATTERN)
KEPT_CYCLES = 50


class CycleReport(BaseModel):
    cycle_id: str
    started_at: float
    result: Result
    error: str | None = None
    threshold: float
    universe_size: int = 0
    skipped: dict[str, str] = {}
    triggers: list[Trigger] = []
    proposals: list[Proposal] = []
    ratio: float = 0.0
    sent: int = 0
    queued: int = 0
    expired: int = 0
    stage_seconds: dict[str, float] = {}


class Outcome(BaseModel):
    sent: int
    queued: int
    expired: int


class CycleRunner:
    def __init__(
        self,
        redis: Redis,
        keys: KeySpace,
        *,
        settings: StrategySettings,
        http: httpx.AsyncClient,
        exchange: ExchangeClient,
        metrics: StrategyMetrics,
        policy: PolicyStore,
        clock: Callable[[], float] = time.time,
    ):
        self.redis = redis
        self.settings = settings
        self.config = settings.strategy
        self.budgets = settings.latency.stage_budgets
        self.http = http
        self.exchange = exchange
        self.metrics = metrics
        self.policy = policy
        self.clock = clock
        self.candles = CandleStore(
            redis, keys, exchange, granularity=self.config.granularity, lookback=self.config.lookback
        )
        self.outbox_key = keys.key("outbox")
        self.history_key = keys.key("history")
        self.cycles_key = keys.key("cycles")
        self.keys = keys
        self.drought_key = keys.key("cycles_since_trigger")
        self.headers = {"Authorization": f"Bearer {settings.trader_api_token}", "Content-Type": "application/json"}

    async def run(self) -> CycleReport:
        """A cycle: evaluated when a candle closed since the last one, else only the outbox is sent again."""
        if self.config.dynamic_conviction.enabled:
            await self._follow_win_rate()
        policy = await self.policy.current()
        self.metrics.threshold.set(policy.threshold)
        started = self.clock()
        stages: dict[str, float] = {}
        try:
            async with self._stage("market_data", stages):
                exchange_now = float((await self.exchange.server_time()).epoch_seconds)
            closed = last_closed(exchange_now, self.config.granularity)
            cycle_id = f"{self.config.granularity.value}:{closed}"
            token = cycle_id_var.set(cycle_id)
            try:
                # A candle is evaluated once, whichever replica or request runs the cycle: the first to claim it.
                claim = self.keys.key("evaluated", cycle_id)
                bar_s = self.config.granularity.seconds
                if not await self.redis.set(claim, "1", nx=True, ex=max(bar_s * 2, 60)):
                    outcome = await self._deliver([])
                    report = CycleReport(
                        cycle_id=cycle_id,
                        started_at=started,
                        result="no_new_data",
                        threshold=policy.threshold,
                        **outcome.model_dump(),
                    )
                else:
                    try:
                        report = await self._evaluate(cycle_id, closed, policy.threshold, started, stages)
                    except BaseException:
                        await self.redis.delete(claim)  # the next cycle tries this candle again
                        raise
            finally:
                cycle_id_var.reset(token)
        except TraderError as exc:
            log.warning("strategy cycle failed: %s", exc.message)
            report = CycleReport(
                cycle_id="", started_at=started, result="failed", error=exc.message, threshold=policy.threshold
            )
        report.stage_seconds = {k: round(v, 4) for k, v in stages.items()}
        await self._record(report)
        return report

    async def _evaluate(
        self, cycle_id: str, closed: int, threshold: float, started: float, stages: dict[str, float]
    ) -> CycleReport:
        async with self._stage("universe_build", stages):
            members = await self._universe()
        liquidity = {m["product_id"]: Liquidity(float(m["spread_bps"]), float(m["quote_volume_24h"])) for m in members}
        unsupported = {pid: "unsupported_product_id: not BASE-QUOTE" for pid in liquidity if not PRODUCT_ID.match(pid)}
        async with self._stage("market_data", stages):
            candles, skipped = await self.candles.refresh([p for p in liquidity if p not in unsupported], closed=closed)
        skipped |= unsupported
        if not candles.products and any(r.startswith("unavailable") for r in skipped.values()):
            # nothing could be read (no quota, exchange down): not an evaluation, and the candle is tried again
            raise MarketDataUnavailable(f"no product's candles could be had: {next(iter(skipped.values()))}")
        for reason in skipped.values():
            self.metrics.skipped.labels(reason.split(":")[0]).inc()
        async with self._stage("signals", stages):
            fired = evaluate(candles, self.config.signals)
            found = find_triggers(
                candles.products, fired, list(trend(candles, self.config.signals)), liquidity, self.config
            )
            now = datetime.now(UTC)
            proposals = propose(found, threshold=threshold, config=self.config, cycle_id=cycle_id, now=now)
        async with self._stage("execution", stages):
            outcome = await self._deliver(proposals)
        self._observe(found, proposals)
        return CycleReport(
            cycle_id=cycle_id,
            started_at=started,
            result="evaluated",
            threshold=threshold,
            universe_size=len(members),
            skipped=skipped,
            triggers=found,
            proposals=proposals,
            ratio=round(ratio(len(found), len(proposals)), 6),
            **outcome.model_dump(),
        )

    async def _follow_win_rate(self) -> None:
        """Dynamic conviction: the executor's closed trades and win rate move the threshold (when it answers)."""
        try:
            answer = await self.http.get(f"{self.settings.executor_url.rstrip('/')}/v1/pnl")
            answer.raise_for_status()
            pnl = answer.json()
            closed, win_rate = int(pnl["closed_trades"]), float(pnl["win_rate"])
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            log.info("no win rate from the executor this cycle (%s): threshold unchanged", type(exc).__name__)
            return
        await self.policy.dynamic(closed_trades=closed, win_rate=win_rate)

    async def _universe(self) -> list[dict[str, object]]:
        try:
            answer = await self.http.get(f"{self.settings.universe_url.rstrip('/')}/v1/universe")
            answer.raise_for_status()
            body = answer.json()
            return [*body["core"], *body["rotational"]]
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            raise UniverseUnavailable(f"the universe could not be read: {type(exc).__name__}: {exc}") from exc

    async def _deliver(self, proposals: list[Proposal]) -> Outcome:
        """Queue the new proposals, then send every queued one that has not expired; an executor that cannot be
        reached leaves them queued for the next cycle, never lost silently."""
        if proposals:
            await self.redis.hset(self.outbox_key, mapping={p.proposal_id: p.model_dump_json() for p in proposals})
        sent = expired = 0
        now = datetime.now(UTC)
        url = f"{self.settings.executor_url.rstrip('/')}/v1/proposals"
        for proposal_id, raw in (await self.redis.hgetall(self.outbox_key)).items():
            try:
                proposal = Proposal.model_validate_json(raw)
            except ValidationError as exc:
                log.error("queued proposal %s is unreadable and dropped: %s", proposal_id.decode(), exc)
                self.metrics.proposals_expired.inc()
                await self.redis.hdel(self.outbox_key, proposal_id)
                continue
            if proposal.expired(now):
                expired += 1
                self.metrics.proposals_expired.inc()
                log.warning("proposal %s for %s expired unsent", proposal.proposal_id, proposal.product_id)
                await self.redis.hdel(self.outbox_key, proposal_id)
                continue
            try:
                answer = await self.http.post(
                    url, content=raw, headers=self.headers | {"Content-Type": "application/json"}
                )
            except httpx.HTTPError as exc:
                log.warning("executor out of reach (%s): proposals stay queued", type(exc).__name__)
                break
            if answer.status_code in (200, 201, 202, 409):
                sent += 1
                await self.redis.hdel(self.outbox_key, proposal_id)
            elif answer.status_code == 422:
                log.error("executor refused proposal %s as invalid: %s", proposal.proposal_id, answer.text[:300])
                await self.redis.hdel(self.outbox_key, proposal_id)
            else:
                log.warning("executor answered %d to a proposal: it stays queued", answer.status_code)
        return Outcome(sent=sent, queued=await self.redis.hlen(self.outbox_key), expired=expired)

    def _observe(self, found: list[Trigger], proposals: list[Proposal]) -> None:
        self.metrics.triggers_detected.set(len(found))
        self.metrics.proposals_generated.set(len(proposals))
        self.metrics.ratio.set(ratio(len(found), len(proposals)))
        self.metrics.proposals.inc(len(proposals))
        for trigger in found:
            self.metrics.triggers.labels(trigger.signal).inc()
            self.metrics.conviction.observe(trigger.conviction)

    async def _record(self, report: CycleReport) -> None:
        self.metrics.cycles.labels(report.result).inc()
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.cycles_key, report.model_dump_json())
        pipe.ltrim(self.cycles_key, 0, KEPT_CYCLES - 1)
        if report.result == "evaluated":
            history = [t.model_dump() for t in report.triggers]
            pipe.lpush(self.history_key, CycleTriggers(cycle_id=report.cycle_id, triggers=history).model_dump_json())
            pipe.ltrim(self.history_key, 0, self.config.history_cycles - 1)
            if report.triggers:
                pipe.set(self.drought_key, 0)
            else:
                pipe.incr(self.drought_key)
        pipe.get(self.drought_key)
        *_, drought = await pipe.execute()
        self.metrics.cycles_since_trigger.set(int(drought or 0))

    @contextlib.asynccontextmanager
    async def _stage(self, stage: str, stages: dict[str, float]) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - started
            stages[stage] = stages.get(stage, 0.0) + seconds
            self.metrics.stage_seconds.labels(stage).observe(seconds)
            budget = getattr(self.budgets, stage)
            if seconds > budget:
                self.metrics.stage_over_budget.labels(stage).inc()
                log.warning("cycle stage %s took %.2fs, over its budget of %.2fs", stage, seconds, budget)


class CycleTriggers(BaseModel):
    cycle_id: str
    triggers: list[Trigger]


class MarketDataUnavailable(TraderError):
    status_code = 503
    code = "market_data_unavailable"
    retryable = True


class UniverseUnavailable(TraderError):
    status_code = 503
    code = "universe_unavailable"
    retryable = True


async def lead_forever(runner: CycleRunner, lock: RedisLock, *, interval_s: float, metrics: StrategyMetrics) -> None:
    """Run a cycle every interval while this replica holds the lease; the others try for it meanwhile, so one of
    them takes over within a cycle of the leader's death (the lease runs out after half a cycle)."""
    while True:
        try:
            metrics.threshold.set((await runner.policy.current()).threshold)
            async with lock.held() as leading:
                metrics.leader.set(1 if leading else 0)
                while leading and not lock.lost:
                    started = time.monotonic()
                    try:
                        await runner.run()
                    except Exception:  # a cycle's bug must not end the loop; it is logged with its traceback
                        log.exception("strategy cycle failed")
                    await asyncio.sleep(max(interval_s - (time.monotonic() - started), 0))
        except Exception:  # Redis trouble while taking the lease: try again on the next beat
            log.warning("taking the strategy lease failed", exc_info=True)
        metrics.leader.set(0)
        await asyncio.sleep(interval_s / 4)
