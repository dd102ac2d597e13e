"""REDIS_URL behind Sentinel: the URL taken apart, the settings' one-line refusals, the client the factory builds."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.connection import ConnectionPool
from redis.asyncio.sentinel import SentinelConnectionPool

from shared.redis import SentinelRedis, SentinelURL, create_redis, is_sentinel_url, parse_sentinel_url
from shared.settings import ServiceSettings
from tests.unit.test_settings import failed_start


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://h1:26379,h2:26380,h3/mymaster/0",
            SentinelURL((("h1", 26379), ("h2", 26380), ("h3", 26379)), "mymaster", 0),
        ),
        ("sentinel://10.0.0.1/cache", SentinelURL((("10.0.0.1", 26379),), "cache", 0)),
        ("REDIS+SENTINEL://h1:1/m/15/", SentinelURL((("h1", 1),), "m", 15)),
        ("redis+sentinel://[::1]:26380,[fe80::1]/m", SentinelURL((("::1", 26380), ("fe80::1", 26379)), "m", 0)),
        (
            "redis+sentinel://:p%40ss%2Fword@h1/m/2",
            SentinelURL((("h1", 26379),), "m", 2, username=None, password="p@ss/word"),
        ),
        (
            "redis+sentinel://app:secret@h1,h2/m?sentinel_password=s3",
            SentinelURL((("h1", 26379), ("h2", 26379)), "m", 0, "app", "secret", "s3"),
        ),
        ("redis+sentinel://h1/my%20master", SentinelURL((("h1", 26379),), "my master", 0)),
    ],
)
def test_a_sentinel_url_gives_the_sentinels_the_master_the_db_and_the_passwords(
    url: str, expected: SentinelURL
) -> None:
    assert is_sentinel_url(url)
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize("url", ["redis://h:6379/0", "rediss://h/0", "unix:///tmp/r.sock", "sentinel", "notaurl"])
def test_other_urls_are_not_sentinel_urls(url: str) -> None:
    assert not is_sentinel_url(url)


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis+sentinel://h1:26379,h2:26379", "the master's name is missing"),
        ("redis+sentinel://h1:26379/", "the master's name is missing"),
        ("redis+sentinel://h1:26379//0", "the master's name is missing"),
        ("redis+sentinel:///mymaster/0", "no sentinel host"),
        ("redis+sentinel://h1,,h2/mymaster", "no sentinel host"),
        ("redis+sentinel://:secret@/mymaster", "no sentinel host"),
        ("redis+sentinel://h1:port/mymaster", "the port must be a number from 1 to 65535"),
        ("redis+sentinel://h1:70000/mymaster", "the port must be a number from 1 to 65535"),
        ("redis+sentinel://:26379/mymaster", "has no host"),
        ("redis+sentinel://[::1/mymaster", "is not [ipv6]:port"),
        ("redis+sentinel://h1/mymaster/zero", "the database after the master's name must be a number"),
        ("redis+sentinel://h1/mymaster/0/extra", "the path is /<master name>/<db>"),
        ("redis+sentinel://h1/mymaster?db=1", "unknown option(s) db"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(ValueError) as refused:
        parse_sentinel_url(url)
    assert words in str(refused.value)
    with pytest.raises(ValidationError) as invalid:
        ServiceSettings(redis_url=url)
    message = invalid.value.errors()[0]["msg"]
    assert message.startswith("Value error, invalid Sentinel URL: ") and words in message


def test_the_password_is_never_in_a_refusal() -> None:
    with pytest.raises(ValueError) as refused:
        parse_sentinel_url("redis+sentinel://:hunter2@h1:bad/mymaster?sentinel_password=hunter3")
    assert "hunter" not in str(refused.value)
    assert "hunter" not in repr(parse_sentinel_url("redis+sentinel://:hunter2@h1/m?sentinel_password=hunter3"))


def test_settings_take_sentinel_urls_and_the_plain_ones_as_before() -> None:
    for url in (
        "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0",
        "sentinel://127.0.0.1/mymaster",
        "redis://127.0.0.1:6379/0",
        "rediss://:pw@redis.example:6380/1",
        "unix:///run/redis.sock?db=2",
    ):
        assert ServiceSettings(redis_url=url).redis_url == url
    with pytest.raises(ValidationError, match="redis\\+sentinel://host1:26379"):
        ServiceSettings(redis_url="http://127.0.0.1:6379/0")


def test_a_bad_sentinel_url_stops_the_service_with_one_line() -> None:
    url = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/"
    line = failed_start("ratelimit", REDIS_URL=url)
    assert f"redis_url = {url!r} (from environment variable REDIS_URL)" in line
    assert "invalid Sentinel URL: the master's name is missing" in line


async def test_the_factory_binds_a_sentinel_url_to_the_master_with_the_usual_options() -> None:
    client = create_redis(
        "redis+sentinel://:pw@127.0.0.1:1,127.0.0.1:2/mymaster/3?sentinel_password=spw", timeout_s=1.5
    )
    try:
        assert isinstance(client, SentinelRedis)
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.is_master and pool.service_name == "mymaster"
        assert pool.max_connections == 64
        kwargs = pool.connection_kwargs
        assert kwargs["db"] == 3 and kwargs["password"] == "pw"
        assert kwargs["socket_timeout"] == 1.5 and kwargs["socket_connect_timeout"] == 1.5
        assert kwargs["health_check_interval"] == 30 and kwargs["decode_responses"] is False
        sentinels = pool.sentinel_manager.sentinels
        assert [(s.connection_pool.connection_kwargs["port"]) for s in sentinels] == [1, 2]
        for sentinel in sentinels:
            sentinel_kwargs = sentinel.connection_pool.connection_kwargs
            assert sentinel_kwargs["password"] == "spw" and sentinel_kwargs["socket_timeout"] == 1.5
            assert sentinel_kwargs["retry"].get_retries() == 0  # a dead sentinel is skipped, not retried
    finally:
        await client.aclose()


async def test_the_factory_keeps_plain_urls_on_one_server() -> None:
    client = create_redis("redis://127.0.0.1:1/2")
    try:
        assert type(client) is Redis and type(client.connection_pool) is ConnectionPool
        assert client.connection_pool.connection_kwargs["db"] == 2
    finally:
        await client.aclose()
