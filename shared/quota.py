"""The quota client: every exchange call takes quota from the ratelimit service through it.

It speaks to the service with aiohttp rather than the stack's httpx client: quota is asked for
before every exchange call, and on this path httpx costs about 2 ms per request at concurrency 1
and collapses under concurrency, where aiohttp stays near the server's own latency (see bench/).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.errors import FatalError, InvalidRequest, NotFound, RetryableError, Unauthorized
from shared.local_limiter import LocalLimiter
from shared.ratelimits import Priority, RateLimitConfig

log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]
POOL_SIZE = 128


class QuotaDenied(RetryableError):
    """No quota within the allowed wait and retries; try again after `retry_after_ms`."""

    status_code = 429
    code = "quota_denied"

    def __init__(self, message: str, *, retry_after_ms: float, reason: str, pool: str):
        super().__init__(message, details={"retry_after_ms": retry_after_ms, "reason": reason, "pool": pool})
        self.retry_after_ms = retry_after_ms
        self.reason = reason
        self.pool = pool


@dataclass(frozen=True, slots=True)
class Grant:
    endpoint: str
    waited_ms: float
    remaining: int
    utilization_pct: float
    fallback: bool


class QuotaMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.fallback = Gauge(
            "trader_rate_limiter_fallback",
            "1 while this process limits itself locally because the ratelimit service is out of reach",
            registry=registry,
        )
        self.fallback_grants = Counter(
            "trader_rate_limiter_fallback_grants_total",
            "Quota granted by the local fallback limiter",
            ["endpoint"],
            registry=registry,
        )


class QuotaClient:
    """Takes quota before each exchange call; waits server-side, retries 429s, never runs unlimited.

    When the service cannot be reached (or answers 503 because Redis is down) it limits itself at
    rate / expected_replicas with the same algorithm, and asks the service again every `probe_s`.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        config: RateLimitConfig,
        client_id: str,
        registry: CollectorRegistry,
        max_wait_ms: int = 2_000,
        max_retries: int = 3,
        max_retry_delay_ms: float = 10_000,
        probe_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.client_id = client_id
        self.url = f"{base_url.rstrip('/')}/v1"
        self._session: aiohttp.ClientSession | None = None
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.max_wait_ms = max_wait_ms
        self.max_retries = max_retries
        self.max_retry_delay_ms = max_retry_delay_ms
        self.probe_s = probe_s
        self.sleep = sleep
        self.clock = clock
        self.local = LocalLimiter(config)
        self.metrics = QuotaMetrics(registry)
        self._fallback_since: float | None = None
        self._next_probe = 0.0

    @property
    def in_fallback(self) -> bool:
        return self._fallback_since is not None

    @asynccontextmanager
    async def acquire(
        self, endpoint: str, *, cost: int = 1, priority: Priority | str | None = None, max_wait_ms: int | None = None
    ) -> AsyncIterator[Grant]:
        """`async with quota.acquire("get_candles", priority="normal"):` around one exchange call."""
        yield await self.take(endpoint, cost=cost, priority=priority, max_wait_ms=max_wait_ms)

    async def take(
        self, endpoint: str, *, cost: int = 1, priority: Priority | str | None = None, max_wait_ms: int | None = None
    ) -> Grant:
        """Quota for one call, or QuotaDenied after the bounded retries."""
        if endpoint not in self.config.endpoints:
            raise NotFound(f"unknown quota endpoint {endpoint!r}; known: {', '.join(sorted(self.config.endpoints))}")
        wait_ms = self.max_wait_ms if max_wait_ms is None else max_wait_ms
        body = {"endpoint": endpoint, "cost": cost, "max_wait_ms": wait_ms, "client_id": self.client_id}
        if priority is not None:
            body["priority"] = Priority(priority).value
        payload = orjson.dumps(body)
        attempt = 0
        while True:
            if self.in_fallback and self.clock() < self._next_probe:
                return await self._take_locally(endpoint, cost, wait_ms)
            try:
                status, data = await self._post("acquire", payload, timeout_s=wait_ms / 1000 + 5)
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
                self._enter_fallback(f"{type(exc).__name__}: {exc}")
                return await self._take_locally(endpoint, cost, wait_ms)
            if status == 503:
                self._enter_fallback(f"service answered 503: {data.get('message', '')}")
                return await self._take_locally(endpoint, cost, wait_ms)
            self._leave_fallback()
            if status == 200:
                return Grant(endpoint, data["waited_ms"], data["remaining"], data["utilization_pct"], fallback=False)
            if status == 429:
                attempt += 1
                retry_ms = float(data["retry_after_ms"])
                if attempt > self.max_retries or retry_ms > self.max_retry_delay_ms:
                    raise QuotaDenied(
                        f"no quota for {endpoint!r} ({data['reason']} on pool {data['pool']!r}); "
                        f"retry after {retry_ms:.0f} ms",
                        retry_after_ms=retry_ms,
                        reason=data["reason"],
                        pool=data["pool"],
                    )
                await self.sleep(retry_ms / 1000)
                continue
            raise self._error(status, data)

    async def _post(self, path: str, payload: bytes, *, timeout_s: float) -> tuple[int, dict[str, Any]]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=30),
                headers=self.headers,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        async with self._session.post(
            f"{self.url}/{path}", data=payload, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            return response.status, orjson.loads(await response.read())

    async def report_penalty(self, *, endpoint: str, retry_after_ms: float) -> None:
        """An exchange 429: close the endpoint's pools for everyone (and locally) until the advised time."""
        retry_ms = max(int(retry_after_ms), 1)
        until = self.clock() + retry_ms / 1000
        for pool in self.config.endpoints[endpoint].pools:
            self.local.penalize(pool, until=until)
        payload = orjson.dumps({"endpoint": endpoint, "retry_after_ms": min(retry_ms, 3_600_000)})
        try:
            status, data = await self._post("penalty", payload, timeout_s=5)
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            status, data = 0, {"message": f"{type(exc).__name__}: {exc}"}
        if status != 200:
            log.warning("could not report an exchange 429 on %s to the ratelimit service: %s", endpoint, data)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _take_locally(self, endpoint: str, cost: int, wait_ms: int) -> Grant:
        decision = self.local.decide(endpoint, cost=cost, now=self.clock(), max_wait_s=wait_ms / 1000)
        if not decision.granted:
            raise QuotaDenied(
                f"no quota for {endpoint!r} from the local fallback limiter; retry after "
                f"{decision.retry_after_s * 1000:.0f} ms",
                retry_after_ms=decision.retry_after_s * 1000,
                reason="limit",
                pool=decision.pool or "",
            )
        if decision.wait_s:
            await self.sleep(decision.wait_s)
        self.metrics.fallback_grants.labels(endpoint).inc()
        return Grant(endpoint, decision.wait_s * 1000, 0, 0.0, fallback=True)

    def _enter_fallback(self, reason: str) -> None:
        if self._fallback_since is None:
            self._fallback_since = self.clock()
            self.metrics.fallback.set(1)
            log.warning(
                "ratelimit service out of reach (%s): limiting locally at rate / %d",
                reason,
                self.config.expected_replicas,
            )
        self._next_probe = self.clock() + self.probe_s

    def _leave_fallback(self) -> None:
        if self._fallback_since is not None:
            log.info(
                "ratelimit service reachable again after %.1fs of local limiting", self.clock() - self._fallback_since
            )
            self._fallback_since = None
            self.metrics.fallback.set(0)

    @staticmethod
    def _error(status: int, data: dict[str, object]) -> FatalError:
        message = str(data.get("message", f"ratelimit service answered {status}"))
        details = data.get("details") if isinstance(data.get("details"), dict) else {}
        kind: type[FatalError] = {401: Unauthorized, 404: NotFound}.get(status, InvalidRequest)
        return kind(f"ratelimit service: {message}", details=details)  # type: ignore[arg-type]
