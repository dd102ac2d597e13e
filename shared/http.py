"""The one HTTP client factory for calls between services (httpx, explicit timeouts, pooled keep-alive)."""

from __future__ import annotations

import httpx

# httpx keeps only 20 idle connections by default; with more concurrent callers every extra request
# opens and closes a TCP connection, which is what makes a default client collapse under load.
DEFAULT_POOL = 128


def create_http_client(
    *,
    base_url: str = "",
    timeout_s: float = 5.0,
    pool_size: int = DEFAULT_POOL,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An AsyncClient with a connect/read/write/pool timeout and a keep-alive pool sized for concurrency."""
    return httpx.AsyncClient(
        base_url=base_url,
        timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 2.0)),
        limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=30.0),
        headers=headers,
    )
