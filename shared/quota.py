"""The quota client: every exchange call takes quota from the ratelimit service through it.

It speaks to the service with aiohttp rather than the stack's httpx client: quota is asked for
before every exchange call, and on this path httpx costs about 2 ms per request at concurrency 1
and collapses under concurrency, where aiohttp stays near the server's own latency (see bench/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
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
# Idle connections are dropped well before the services' own keep-alive (shared.server.KEEP_ALIVE_S), so the
# client never sends on a connection the server is closing.
KEEPALIVE_S = 30
# How long past its own max_wait a request may take before the service counts as out of reach.
SERVICE_TIMEOUT_S = 2.0
PROBE_TIMEOUT_S = 1.0
TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError)


def default_client_id() -> str:
    """This process, as the ratelimit service counts it: host, pid and a random part (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


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

    When the service cannot be reached, times out or answers 5xx, it limits itself locally with the same
    algorithm at its share of each pool (the service tells every grant how many processes draw on the pool),
    and one background probe asks the service every `probe_s` until it answers again; callers never wait
    on a service that is down or hanging.
    """

    def __init__(
        self,
        *,
        base_url: str,
        token: str,
        config: RateLimitConfig,
        registry: CollectorRegistry,
        client_id: str | None = None,
        max_wait_ms: int = 2_000,
        max_retries: int = 3,
        max_retry_delay_ms: float = 10_000,
        probe_s: float = 2.0,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.client_id = client_id or default_client_id()
        self.url = f"{base_url.rstrip('/')}/v1"
        self._session: aiohttp.ClientSession | None = None
        self._fresh_session: aiohttp.ClientSession | None = None
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
        self._probe: asyncio.Task[None] | None = None

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
        urgency = Priority(priority) if priority is not None else self.config.endpoints[endpoint].priority
        attempt = 0
        while True:
            if self.in_fallback:
                return await self._take_locally(endpoint, cost, wait_ms, urgency)
            try:
                status, data = await self._post("acquire", payload, timeout_s=wait_ms / 1000 + SERVICE_TIMEOUT_S)
            except TRANSPORT_ERRORS as exc:
                self._enter_fallback(f"{type(exc).__name__}: {exc}")
                return await self._take_locally(endpoint, cost, wait_ms, urgency)
            if status >= 500:
                self._enter_fallback(f"service answered {status}: {data.get('message', '')}")
                return await self._take_locally(endpoint, cost, wait_ms, urgency)
            if status == 200:
                self.local.learn(data.get("clients") or {})
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

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        """The pooled session, and one that opens a new connection per request for retries."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=KEEPALIVE_S), headers=self.headers
            )
        if self._fresh_session is None or self._fresh_session.closed:
            self._fresh_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True), headers=self.headers
            )
        return self._session, self._fresh_session

    async def _post(self, path: str, payload: bytes, *, timeout_s: float) -> tuple[int, dict[str, Any]]:
        """POST to the service; a connection that fails (one the server closed, say) is retried once on a new one."""
        pooled, fresh = self._sessions()
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            return await self._send(pooled, path, payload, timeout)
        except aiohttp.ServerTimeoutError:
            raise  # a service that does not answer in time will not on a new connection either
        except aiohttp.ClientConnectionError as exc:
            log.debug("quota request failed on a pooled connection (%s); retrying on a new one", exc)
        return await self._send(fresh, path, payload, timeout)

    async def _send(
        self, session: aiohttp.ClientSession, path: str, payload: bytes, limit: aiohttp.ClientTimeout
    ) -> tuple[int, dict[str, Any]]:
        async with session.post(f"{self.url}/{path}", data=payload, timeout=limit) as response:
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
        except TRANSPORT_ERRORS as exc:
            status, data = 0, {"message": f"{type(exc).__name__}: {exc}"}
        if status != 200:
            log.warning("could not report an exchange 429 on %s to the ratelimit service: %s", endpoint, data)

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
            self._probe = None
        for session in (self._session, self._fresh_session):
            if session is not None:
                await session.close()

    async def _take_locally(self, endpoint: str, cost: int, wait_ms: int, priority: Priority) -> Grant:
        """The local limiter's grant; like the service, a request that may wait but holds no slot asks again."""
        reserve = priority is Priority.CRITICAL
        deadline = self.clock() + wait_ms / 1000
        while True:
            left = max(deadline - self.clock(), 0.0)
            decision = self.local.decide(endpoint, cost=cost, now=self.clock(), max_wait_s=left, reserve=reserve)
            if decision.granted or reserve or not 0 < decision.retry_after_s <= deadline - self.clock():
                break
            await self.sleep(decision.retry_after_s)
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
        if self._fallback_since is not None:
            return
        self._fallback_since = self.clock()
        self.metrics.fallback.set(1)
        log.warning(
            "ratelimit service out of reach (%s): limiting locally at this process's share of each pool %s",
            reason,
            {pool: f"1/{self.local.sharers(pool)}" for pool in self.config.pools},
        )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        """One probe at a time, off the callers' path: a real acquire at background priority, so the service
        counts as back only when Redis takes writes again (a read-only replica still answers reads)."""
        endpoint = next(iter(self.config.endpoints))
        probe = orjson.dumps(
            {"endpoint": endpoint, "priority": Priority.BACKGROUND.value, "max_wait_ms": 0, "client_id": self.client_id}
        )
        while True:
            await self.sleep(self.probe_s)
            try:
                status, _ = await self._post("acquire", probe, timeout_s=PROBE_TIMEOUT_S)
            except TRANSPORT_ERRORS:
                continue
            if status < 500:  # granted, or refused by the limit: either way the service decides again
                break
        log.info("ratelimit service reachable again after %.1fs of local limiting", self.clock() - self._fallback_since)
        self._fallback_since = None
        self._probe = None
        self.metrics.fallback.set(0)

    @staticmethod
    def _error(status: int, data: dict[str, object]) -> FatalError:
        message = str(data.get("message", f"ratelimit service answered {status}"))
        details = data.get("details") if isinstance(data.get("details"), dict) else {}
        kind: type[FatalError] = {401: Unauthorized, 404: NotFound}.get(status, InvalidRequest)
        return kind(f"ratelimit service: {message}", details=details)  # type: ignore[arg-type]
