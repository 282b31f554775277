"""Shared fixtures: a real Redis-compatible server for the whole run.

The server is the embedded one (waitroom.devtools.embedded_redis) on a private unix socket,
or the server named by WAITROOM_TEST_REDIS_URL. Each test gets a flushed database.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.line.state import connect

pytest_plugins = ("tests.support.e2e",)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis | None]:
    """The embedded server, or None when tests run against an external one."""
    if os.environ.get("WAITROOM_TEST_REDIS_URL"):
        yield None
        return
    server = EmbeddedRedis()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis | None) -> str:
    external = os.environ.get("WAITROOM_TEST_REDIS_URL")
    if external:
        return external
    assert redis_server is not None
    return redis_server.url


@pytest.fixture
def redis_sync(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def redis_client(redis_url: str, redis_sync: redis.Redis) -> AsyncIterator[aioredis.Redis]:
    """An asyncio client on a flushed database (redis_sync does the flush)."""
    client = connect(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
