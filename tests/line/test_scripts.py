"""The script registry: every Lua file loaded once, every call's errors mapped once."""

from __future__ import annotations

from importlib import resources

import pytest
import redis.asyncio as aioredis

from waitroom.errors import StoreUnavailable
from waitroom.line.scripts import SCRIPTS, SPEND


def test_every_lua_file_is_registered_once_with_its_header() -> None:
    files = sorted(
        f.name
        for f in resources.files("waitroom.line").joinpath("lua").iterdir()
        if f.name.endswith(".lua")
    )
    assert sorted(SCRIPTS) == files
    for name, script in SCRIPTS.items():
        assert script.name == name
        assert script.source.startswith(f"-- {name}:"), name  # the header stays first
        assert "Returns" in script.source, name


async def test_a_script_call_maps_redis_errors_to_store_unavailable() -> None:
    client = aioredis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens
    try:
        with pytest.raises(StoreUnavailable, match="spend tickets") as caught:
            await SPEND(client, ["k"], [60])
    finally:
        await client.aclose()
    assert caught.value.__cause__ is not None  # chained from redis-py's error
