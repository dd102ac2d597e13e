"""A lock one process holds at a time across replicas, in Redis: renewed while held, freed by its timeout when
the holder dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
RENEW_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"


class RedisLock:
    """A lock one process holds at a time, for at most `timeout_s` unless renewed: a holder that dies frees
    it when the timeout runs out."""

    def __init__(self, redis: Redis, key: str, *, owner: str, timeout_s: float):
        self.redis = redis
        self.key = key
        self.owner = owner
        self.timeout_ms = max(int(timeout_s * 1000), 1)
        self.lost = False  # set when a renewal finds the lock taken by another: the holder should stop
        self._release = redis.register_script(RELEASE_LUA)
        self._renew = redis.register_script(RENEW_LUA)

    async def holder(self) -> str | None:
        """Who holds the lock (the process, without the token of its acquisition)."""
        raw = await self.redis.get(self.key)
        return raw.decode().rsplit("/", 1)[0] if raw else None

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[bool]:
        """Yields whether this acquisition got the lock; renews it while the block runs, releases it after.

        Each acquisition has a token of its own, so a release never frees a lock taken again after a timeout.
        """
        token = f"{self.owner}/{uuid.uuid4().hex[:8]}"
        if not await self.redis.set(self.key, token, nx=True, px=self.timeout_ms):
            yield False
            return
        self.lost = False
        renewer = asyncio.get_running_loop().create_task(self._keep(token))
        try:
            yield True
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            try:
                await self._release(keys=[self.key], args=[token])
            except RedisError as exc:  # the lock then runs out by itself
                log.warning("could not release the lock %s: %s", self.key, exc)

    async def _keep(self, token: str) -> None:
        while True:
            await asyncio.sleep(self.timeout_ms / 3000)
            try:
                if not await self._renew(keys=[self.key], args=[token, self.timeout_ms]):
                    log.warning("lost the lock %s while holding it", self.key)
                    self.lost = True
                    return
            except RedisError as exc:  # one failed renewal is not fatal: the next one may go through
                log.warning("renewing the lock %s failed: %s", self.key, exc)
