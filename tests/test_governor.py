"""Admission that follows the backend's health (AIMD) and makes up for no-shows."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from lookup.app import create_app as create_backend
from tests.e2e import candidate_form, join, student, wait_for_credit
from tests.gateway_support import BACKEND_KEYS, make_settings
from tests.servers import serving
from waitroom.app import create_app
from waitroom.governor import Governor
from waitroom.queue import Queue
from waitroom.telemetry import Sample

T0 = 1_900_000_000_000


def sample(t: float, **values: Any) -> Sample:
    fields: dict[str, Any] = {
        "t": t,
        "waiting": 100,
        "seq": 100,
        "frontier": 0,
        "admitted_per_s": 0.0,
        "arrivals_per_s": 0.0,
        "target_rate": 10.0,
        "active": 0,
        "max_active": 1000,
        "backend_per_s": 10.0,
        "p50_ms": 20.0,
        "p95_ms": 40.0,
        "error_rate": 0.0,
    }
    fields.update(values)
    return Sample(**fields)


async def _room(redis_client: aioredis.Redis, redis_url: str, **overrides: Any) -> Queue:
    settings = make_settings(redis_url, rate=10.0, max_active=10**6, **overrides)
    queue = Queue(redis_client, settings)
    await queue.init(now_ms=T0)
    return queue


async def test_slow_backend_cuts_the_rate_then_healthy_raises_it_back(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue = await _room(redis_client, redis_url, backend_p95_target_ms=500.0)
    governor = Governor(queue, queue.settings)
    t = 1000.0
    await governor.update(sample(t, p95_ms=1500.0), await queue.read())
    state = await queue.read()
    assert state is not None and state.effective_rate == 7.0
    assert "p95 1500 ms over the 500 ms target" in state.governor_reason
    # A second bad second within the window: no second cut before the first shows.
    await governor.update(sample(t + 1, p95_ms=1500.0), state)
    state = await queue.read()
    assert state is not None and state.effective_rate == 7.0
    # Errors count too, and cuts go on once per window, down to a floor.
    for step in range(2, 60, 5):
        await governor.update(sample(t + step, error_rate=0.5), await queue.read())
    state = await queue.read()
    assert state is not None and state.effective_rate == 0.5  # 5 % of 10/s
    assert "errors 50%" in state.governor_reason
    # Healthy again: up by 5 % of the ceiling every two seconds, then let go.
    t += 100
    rates = []
    for step in range(0, 80, 2):
        await governor.update(sample(t + step), await queue.read())
        state = await queue.read()
        assert state is not None
        rates.append(state.effective_rate)
    assert rates[0] == 1.0 and rates[1] == 1.5
    assert rates == sorted(rates, key=lambda r: r if r is not None else 99)
    assert rates[-1] is None and "back at the admin's rate" in state.governor_reason


async def test_the_pacer_admits_at_the_governed_rate(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue = await _room(redis_client, redis_url)
    for _ in range(200):
        await queue.join(now_ms=T0)
    await queue.tick("p", now_ms=T0)
    await queue.govern(4.0, None, "test", 0)
    admitted = 0
    for second in range(1, 11):
        tick = await queue.tick("p", now_ms=T0 + second * 1000)
        assert tick is not None
        admitted += tick.advanced
    assert admitted == 40  # 4/s, not the admin's 10/s
    # A no-show factor of 1.5 admits 1.5 times faster.
    await queue.govern(None, 1.5, "test", 0)
    admitted = 0
    for second in range(11, 21):
        tick = await queue.tick("p", now_ms=T0 + second * 1000)
        assert tick is not None
        admitted += tick.advanced
    assert admitted == 150


async def test_no_shows_are_measured_and_made_up(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue = await _room(redis_client, redis_url)
    governor = Governor(queue, queue.settings)
    # Ten admitted a second, five of them come for their pass.
    factors = []
    for second in range(90):
        s = sample(1000.0 + second, admitted_total=10 * second, shown_total=5 * second)
        await governor.update(s, await queue.read())
        state = await queue.read()
        assert state is not None
        factors.append(state.noshow_factor)
    assert factors[10] == 1.0  # not enough history yet
    assert 1.9 < factors[-1] <= 2.0
    assert state.admission_rate > 19  # 10/s to the backend needs 20/s admitted
    assert "50% of admitted students came" in state.governor_reason
    # Everyone comes again: the factor goes back to 1.
    base_admitted, base_shown = 900, 450
    for second in range(90, 300):
        s = sample(
            1000.0 + second,
            admitted_total=base_admitted + 10 * (second - 90),
            shown_total=base_shown + 10 * (second - 90),
        )
        await governor.update(s, await queue.read())
    state = await queue.read()
    assert state is not None and state.noshow_factor == 1.0


async def test_a_slowed_backend_slows_admission_and_its_recovery_raises_it(
    redis_url: str, redis_sync: Any, results_db: Path
) -> None:
    delay = {"s": 0.0}
    real = create_backend(results_db, admission_keys=BACKEND_KEYS)

    async def slowable(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/api/result":
            await asyncio.sleep(delay["s"])
        await real(scope, receive, send)

    async with serving(slowable) as backend:
        settings = make_settings(
            redis_url,
            rate=20.0,
            backend_url=backend.url,
            backend_p95_target_ms=100.0,
            pass_max_lookups=0,  # one pass is the load generator: no lookup limit
        )
        async with serving(create_app(settings)) as gw, student() as s:
            await wait_for_credit(gw.url)
            await join(s, gw.url)
            stop = asyncio.Event()

            async def lookups() -> None:
                k = 0
                while not stop.is_set():
                    async with s.post(gw.url + "/api/result", json=candidate_form(k % 40)) as r:
                        assert r.status == 200  # slow is not an error for the student
                    k += 1

            async def governed() -> float | None:
                raw = await redis_sync_rate(redis_url)
                return raw

            workers = [asyncio.create_task(lookups()) for _ in range(4)]
            try:
                delay["s"] = 0.3
                deadline = time.monotonic() + 10
                while (rate := await governed()) is None or rate >= 20.0:
                    assert time.monotonic() < deadline, "the rate was never cut"
                    await asyncio.sleep(0.2)
                low = rate
                assert low <= 14.0
                delay["s"] = 0.0
                deadline = time.monotonic() + 15
                while (rate := await governed()) is not None and rate <= low:
                    assert time.monotonic() < deadline, "the rate never recovered"
                    await asyncio.sleep(0.2)
            finally:
                stop.set()
                await asyncio.gather(*workers, return_exceptions=True)


async def redis_sync_rate(redis_url: str) -> float | None:
    from waitroom.keys import RoomKeys
    from waitroom.queue import connect

    client = connect(redis_url)
    try:
        value = await client.hget(RoomKeys("results").state, "effective_rate")
    finally:
        await client.aclose()
    return float(value) if value else None


async def test_metrics_are_room_wide_in_the_prometheus_format(
    redis_url: str, redis_sync: Any, results_db: Path
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    backend_app = create_backend(results_db, admission_keys=BACKEND_KEYS)
    async with serving(backend_app) as backend:
        settings = make_settings(redis_url, rate=50.0, backend_url=backend.url, pass_max_lookups=6)
        async with (
            serving(create_app(settings)) as gw,
            serving(create_app(settings)) as other,
            student() as s,
        ):
            await wait_for_credit(gw.url)
            await join(s, gw.url)
            for k in range(7):
                async with s.post(gw.url + "/api/result", json=candidate_form(k)) as r:
                    assert r.status == (200 if k < 6 else 429)
            async with student() as forger:
                forger.cookie_jar.update_cookies({"wr_ticket": "garbage"})
                await join(forger, gw.url)
            await asyncio.sleep(1.0)  # two flushes
            async with s.get(other.url + "/metrics") as response:  # another worker
                assert response.status == 200
                assert response.content_type == "text/plain"
                text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    value = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    # Six lookups, and the two joins, admitted at once, going on to the form (GET /).
    assert value[("waitroom_backend_requests_total", ())] == 8
    assert value[("waitroom_backend_latency_seconds_count", ())] == 8
    assert value[("waitroom_backend_latency_seconds_bucket", (("le", "+Inf"),))] == 8
    assert value[("waitroom_redis_up", ())] == 1
    assert value[("waitroom_last_position", ())] == 2
    assert value[("waitroom_rate_ceiling", ())] == 50
    rejected = (("cookie", "ticket"), ("reason", "garbled"))
    assert value[("waitroom_cookies_rejected_total", rejected)] == 1
    assert value[("waitroom_limited_total", (("limit", "lookups"),))] == 1
