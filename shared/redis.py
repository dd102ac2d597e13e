"""The one Redis client factory: redis-py asyncio (hiredis parser when installed)."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str, *, max_connections: int = 64, timeout_s: float = 2.0) -> Redis:
    """Open a pooled asyncio Redis client that reconnects by itself after an outage."""
    return Redis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=timeout_s,
        socket_timeout=timeout_s,
        health_check_interval=30,
        retry_on_timeout=False,
        decode_responses=False,
    )


class KeySpace:
    """Builds `<prefix><service>:<entity>:<id>` keys so tests and stacks can share one Redis."""

    def __init__(self, prefix: str, service: str):
        self.base = f"{prefix}{service}:"

    def key(self, *parts: str) -> str:
        return self.base + ":".join(parts)
