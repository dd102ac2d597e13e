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
        """Every product's candles up to the candle starting at `closed`, with the products left out and why."""
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
            else:
                rows[product_id] = result
        return self._aligned(rows), skipped

    async def _refresh_one(self, product_id: str, closed: int) -> list[Row] | str:
        raw = await self.redis.get(self.key(product_id))
        cached: list[Row] = orjson.loads(raw) if raw else []
        newest = int(cached[-1][0]) if cached else None
        if newest is not None and newest >= closed:
            return cached
        step = self.granularity.seconds
        start = newest + step if newest is not None else closed - (self.lookback - 1) * step
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
        if not cached and not fresh:
            return "no_candles"
        merged = {int(row[0]): row for row in cached + fresh}
        kept = [merged[t] for t in sorted(merged)][-self.lookback :]
        await self.redis.set(self.key(product_id), orjson.dumps(kept))
        return kept

    def _aligned(self, rows: dict[str, list[Row]]) -> Candles:
        """Right-aligned arrays (products, lookback), NaN before a product's first candle."""
        products = tuple(sorted(rows))
        data = np.full((len(products), self.lookback, 5), np.nan)
        for index, product_id in enumerate(products):
            series = np.asarray(rows[product_id], dtype=np.float64)[:, 1:]
            data[index, self.lookback - len(series) :, :] = series
        return Candles(products, *(data[:, :, i] for i in range(5)))
