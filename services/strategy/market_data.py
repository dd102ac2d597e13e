"""Candles per product, cached in Redis and fetched incrementally: each cycle asks the exchange only for the
candles that closed since the last one cached (`normal` quota), at most one call per product per new candle."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
import orjson
from redis.asyncio import Redis

from services.strategy.signals import Candles
from shared.errors import TraderError
from shared.exchange.client import ExchangeClient
from shared.exchange.errors import BadExchangeResponse, ExchangeRejected
from shared.exchange.models import Granularity
from shared.redis import KeySpace

log = logging.getLogger(__name__)

Row = list[float]  # start, open, high, low, close, volume
CONCURRENCY = 8
# A product needs this share of the lookback before its signals are read.
MIN_SHARE = 0.5
ROW_LENGTH = 6


def sane(row: Row) -> bool:
    """Positive prices with the low and high around the open and close, and a volume of zero or more."""
    _, open_, high, low, close, volume = row
    return 0 < low <= min(open_, close) and max(open_, close) <= high and volume >= 0


def last_closed(now: float, granularity: Granularity) -> int:
    """The start of the newest candle that has closed at `now` (exchange time)."""
    seconds = granularity.seconds
    return int(now) - int(now) % seconds - seconds


class CandleStore:
    def __init__(
        self, redis: Redis, keys: KeySpace, exchange: ExchangeClient, *, granularity: Granularity, lookback: int
    ):
        self.redis = redis
        self.keys = keys
        self.exchange = exchange
        self.granularity = granularity
        self.lookback = lookback

    def key(self, product_id: str) -> str:
        return self.keys.key("candles", self.granularity.value, product_id)

    async def refresh(self, product_ids: Sequence[str], *, closed: int) -> tuple[Candles, dict[str, str]]:
        """Every product's candles up to the candle starting at `closed`, with the products left out and why (a
        product whose newest candle is not that one is stale: its signals would read an old market as now)."""
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(product_id: str) -> list[Row] | str:
            async with gate:
                return await self._refresh_one(product_id, closed)

        results = await asyncio.gather(*(one(p) for p in product_ids))
        rows: dict[str, list[Row]] = {}
        skipped: dict[str, str] = {}
        for product_id, result in zip(product_ids, results, strict=True):
            if isinstance(result, str):
                skipped[product_id] = result
            elif len(result) < self.lookback * MIN_SHARE:
                skipped[product_id] = f"too_few_candles: {len(result)} of {self.lookback}"
            elif int(result[-1][0]) != closed:
                skipped[product_id] = f"stale: the newest candle starts at {int(result[-1][0])}, not {closed}"
            else:
                rows[product_id] = result
        return self._aligned(rows, closed), skipped

    async def _cached(self, product_id: str, oldest: int) -> list[Row]:
        """The product's cached candles from `oldest` on; none when the cache is unreadable (it is fetched again)."""
        raw = await self.redis.get(self.key(product_id))
        if not raw:
            return []
        try:
            rows = orjson.loads(raw)
            if not all(isinstance(row, list) and len(row) == ROW_LENGTH for row in rows):
                raise ValueError("unexpected shape")
        except (orjson.JSONDecodeError, ValueError, TypeError) as exc:
            log.warning("cached candles of %s unreadable (%s): fetching them again", product_id, exc)
            return []
        return [row for row in rows if row[0] >= oldest]

    async def _refresh_one(self, product_id: str, closed: int) -> list[Row] | str:
        step = self.granularity.seconds
        oldest = closed - (self.lookback - 1) * step
        cached = await self._cached(product_id, oldest)
        newest = int(cached[-1][0]) if cached else None
        if newest is not None and newest >= closed:
            return cached
        start = newest + step if newest is not None else oldest
        try:
            candles = await self.exchange.get_candles(
                product_id, start=start, end=closed + step, granularity=self.granularity
            )
        except BadExchangeResponse as exc:
            log.warning("candles of %s unreadable: %s", product_id, exc.message)
            return f"bad_data: {exc.message}"
        except ExchangeRejected as exc:
            return f"rejected: {exc.message}"
        except TraderError as exc:
            log.warning("candles of %s not had this cycle: %s", product_id, exc.message)
            return f"unavailable: {exc.message}"
        fresh = [
            [float(c.start), float(c.open), float(c.high), float(c.low), float(c.close), float(c.volume)]
            for c in sorted(candles, key=lambda c: c.start)
            if start <= c.start <= closed
        ]
        broken = next((row for row in fresh if not sane(row)), None)
        if broken is not None:
            return f"bad_data: the candle at {int(broken[0])} has prices or a volume no market has: {broken[1:]}"
        if not cached and not fresh:
            return "no_candles"
        merged = {int(row[0]): row for row in cached + fresh}
        kept = [merged[t] for t in sorted(merged)][-self.lookback :]
        await self.redis.set(self.key(product_id), orjson.dumps(kept))
        return kept

    def _aligned(self, rows: dict[str, list[Row]], closed: int) -> Candles:
        """Arrays (products, lookback) placed by time, the candle starting at `closed` last; NaN where a product
        has no candle (before its first, or a bar without trades)."""
        products = tuple(sorted(rows))
        step = self.granularity.seconds
        data = np.full((len(products), self.lookback, 5), np.nan)
        for index, product_id in enumerate(products):
            series = np.asarray(rows[product_id], dtype=np.float64)
            slots = self.lookback - 1 - ((closed - series[:, 0]) // step).astype(int)
            inside = slots >= 0
            data[index, slots[inside], :] = series[inside, 1:]
        return Candles(products, *(data[:, :, i] for i in range(5)))
