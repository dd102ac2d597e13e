"""The one Redis client factory: redis-py asyncio (hiredis parser when installed), on one server or behind Sentinel.

`REDIS_URL` is either a plain redis-py URL (`redis://`, `rediss://`, `unix://`) or a Sentinel URL:

    redis+sentinel://[[username]:password@]host1[:port],host2[:port],.../<master name>[/<db>][?sentinel_password=...]

(`sentinel://` is the same). The hosts are the sentinels (port 26379 when left out); the client asks them for the
master of that name and connects there, and after a failover (a dropped connection, or READONLY from a demoted
master) asks again and follows the new master. The password is the data nodes' (`requirepass`); sentinels that
have one of their own get it from `sentinel_password`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")
DEFAULT_SENTINEL_PORT = 26379
SENTINEL_URL_FORM = "redis+sentinel://[:password@]host1:26379,host2:26379,host3:26379/<master name>/<db>"
SENTINEL_QUERY_OPTIONS = ("sentinel_password",)


@dataclass(frozen=True, slots=True)
class SentinelURL:
    """What a Sentinel URL says: where the sentinels are, which master to ask them for, and how to log in."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_password: str | None = field(default=None, repr=False)

    def sentinel_kwargs(self, timeout_s: float, retry: Any) -> dict[str, Any]:
        """Options of the connections to the sentinels; `retry` is the sync or asyncio Retry of the client.

        One try per sentinel per question: a dead sentinel is skipped at once rather than retried with backoff
        (redis-py's default for a plain client), so the master is still found through the others."""
        return {
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "password": self.sentinel_password,
            "retry": retry,
        }

    def login(self) -> dict[str, Any]:
        """The master's db and credentials, for `master_for`."""
        return {"db": self.db, "username": self.username, "password": self.password}


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SENTINEL_SCHEMES and "://" in url


def _host_port(item: str) -> tuple[str, int]:
    """`host`, `host:port`, `[v6]` or `[v6]:port`; the port defaults to the sentinels' 26379."""
    if item.startswith("["):
        host, bracket, rest = item[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(f"sentinel address {item!r} is not [ipv6]:port")
        port_text = rest[1:] if rest else ""
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"sentinel address {item!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not (port_text.isascii() and port_text.isdecimal()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {item!r}: the port must be a number from 1 to 65535")
    return host, int(port_text)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a `redis+sentinel://` (or `sentinel://`) URL; a ValueError names what is wrong, never the password."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"a Sentinel URL starts with redis+sentinel:// or sentinel://, e.g. {SENTINEL_URL_FORM}")
    # Taken apart by hand: the address part holds several hosts, which urllib's port checks refuse.
    rest = rest.partition("#")[0]
    rest, _, query_text = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        hosts = netloc
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon and secret else None
    items = [item.strip() for item in hosts.split(",")]
    if not hosts or any(not item for item in items):
        raise ValueError(f"no sentinel host (or an empty one between commas); expected {SENTINEL_URL_FORM}")
    sentinels = tuple(_host_port(item) for item in items)
    segments = path.removesuffix("/").split("/")
    if not segments[0]:
        raise ValueError(f"the master's name is missing after the sentinel hosts; expected {SENTINEL_URL_FORM}")
    if len(segments) > 2:
        raise ValueError(f"the path is /<master name>/<db>, got {'/' + path!r}")
    service_name = unquote(segments[0])
    db_text = segments[1] if len(segments) == 2 else "0"
    if not (db_text.isascii() and db_text.isdecimal()):
        raise ValueError(f"the database after the master's name must be a number, got {db_text!r}")
    query = parse_qs(query_text, keep_blank_values=True)
    unknown = sorted(set(query) - set(SENTINEL_QUERY_OPTIONS))
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; a Sentinel URL takes only sentinel_password")
    sentinel_password = query.get("sentinel_password", [""])[-1] or None
    return SentinelURL(sentinels, service_name, int(db_text), username, password, sentinel_password)


class SentinelRedis(Redis):
    """A client of the master a set of sentinels name; closing it also closes its connections to the sentinels."""

    connection_pool: SentinelConnectionPool

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            await self.connection_pool.sentinel_manager.aclose()


def create_redis(url: str, *, max_connections: int = 64, timeout_s: float = 2.0) -> Redis:
    """Open a pooled asyncio Redis client that reconnects by itself after an outage (and, behind Sentinel, after a
    failover, to the new master)."""
    options: dict[str, Any] = {
        "max_connections": max_connections,
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,
        "health_check_interval": 30,
        "retry_on_timeout": False,
        "decode_responses": False,
    }
    if not is_sentinel_url(url):
        return Redis.from_url(url, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(target.sentinels, sentinel_kwargs=target.sentinel_kwargs(timeout_s, Retry(NoBackoff(), 0)))
    return sentinel.master_for(target.service_name, redis_class=SentinelRedis, **target.login(), **options)


class KeySpace:
    """Builds `<prefix><service>:<entity>:<id>` keys so tests and stacks can share one Redis."""

    def __init__(self, prefix: str, service: str):
        self.base = f"{prefix}{service}:"

    def key(self, *parts: str) -> str:
        return self.base + ":".join(parts)
