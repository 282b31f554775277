"""The script registry, and the admission-rate formula's two copies held together.

``waitroom.line.state.admission_rate`` is the reference; ``advance.lua`` works the
same out inside Redis. The property test drives advance.lua in a real Redis with
random ceilings, governor decisions, no-show factors and rate modes, reads back
the credit one simulated second minted (the rate it admits at), and compares it
with the Python property read from the same stored state.
"""

from __future__ import annotations

from importlib import resources

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.gateway_support import make_settings
from waitroom.errors import StoreUnavailable
from waitroom.line.scripts import SCRIPTS, SPEND
from waitroom.line.state import AUTO_START_RATE, Queue, admission_rate

T0_MS = 1_800_000_000_000


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


def test_the_reference_formula() -> None:
    assert admission_rate(10.0, None, 1.0, False) == 10.0
    assert admission_rate(10.0, 4.0, 1.5, False) == 6.0
    assert admission_rate(10.0, 40.0, 3.0, False) == 20.0  # factor held at 2
    assert admission_rate(10.0, None, 0.5, False) == 10.0  # and at 1
    assert admission_rate(100.0, None, 2.0, True) == AUTO_START_RATE  # no factor in auto
    assert admission_rate(3.0, None, 1.0, True) == 3.0  # the ceiling still holds


optional_rate = st.none() | st.floats(min_value=0.01, max_value=5000.0)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ceiling=st.floats(min_value=0.001, max_value=100_000.0),
    in_config=st.booleans(),  # the admin's values in the config hash, or the settings'
    effective_rate=optional_rate,
    noshow_factor=st.none() | st.floats(min_value=0.1, max_value=5.0),
    rate_auto=st.booleans(),
)
async def test_advance_lua_admits_at_the_reference_rate(
    redis_client: aioredis.Redis,
    redis_url: str,
    ceiling: float,
    in_config: bool,
    effective_rate: float | None,
    noshow_factor: float | None,
    rate_auto: bool,
) -> None:
    if in_config:
        room = make_settings(redis_url)  # defaults that the config hash overrides
    else:
        room = make_settings(redis_url, rate=ceiling, rate_auto=rate_auto, max_active=10**6)
    queue = Queue(redis_client, room.line())
    k = queue.keys
    await redis_client.delete(k.state, k.active, k.config, k.lease)
    if in_config:
        await redis_client.hset(
            k.config, mapping={"rate": repr(ceiling), "rate_auto": "1" if rate_auto else "0"}
        )
    assert await queue.init(now_ms=T0_MS)  # credit 0, last tick at T0, nobody waiting
    await queue.govern(effective_rate, noshow_factor, "test", 0.0)
    state = await queue.read()
    assert state is not None

    # One simulated second with nobody in line: the credit minted is the rate itself
    # (capped at max(1, rate), which the rate never passes), and stays unspent.
    tick = await queue.tick("pacer", now_ms=T0_MS + 1000)
    assert tick is not None and tick.holder and tick.advanced == 0
    credit = float(await redis_client.hget(k.state, "credit") or 0)

    assert credit == pytest.approx(state.admission_rate, rel=1e-12, abs=1e-12)
