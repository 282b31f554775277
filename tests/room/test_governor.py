"""Admission that follows the backend's health (AIMD) and makes up for no-shows."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from tests.support.e2e import candidate_form, join, student, wait_for_credit
from tests.support.gateway_support import BACKEND_KEYS, make_settings
from tests.support.origin_model import T0_S, Origin, Second, Simulation, trace
from tests.support.servers import serving
from waitroom.gateway.app import create_app
from waitroom.gateway.services import make_governor
from waitroom.line.state import AUTO_START_RATE, Queue, Search, Tick
from waitroom.lookup.app import create_app as create_backend
from waitroom.room.estimate import CLIMBING_POLL_MAX_S
from waitroom.room.governor import CLIMB, KINDS, SETTLE_S
from waitroom.room.telemetry import RECENT_MIN_LOOKUPS, BackendStats, Sample, Sampler
from waitroom.settings import Settings

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


async def _room(
    redis_client: aioredis.Redis, redis_url: str, **overrides: Any
) -> tuple[Queue, Settings]:
    settings = make_settings(redis_url, rate=10.0, max_active=10**6, **overrides)
    queue = Queue(redis_client, settings.line())
    await queue.init(now_ms=T0)
    return queue, settings


async def test_slow_backend_cuts_the_rate_then_healthy_raises_it_back(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _room(redis_client, redis_url, backend_p95_target_ms=500.0)
    governor = make_governor(queue, settings)
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
    queue, _ = await _room(redis_client, redis_url)
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
    queue, settings = await _room(redis_client, redis_url)
    governor = make_governor(queue, settings)
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
    from waitroom.line.keys import RoomKeys
    from waitroom.line.state import connect

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


# -- the auto rate: a search for the backend's capacity ------------------------------


async def _auto_room(
    redis_client: aioredis.Redis, redis_url: str, most: float = 1000.0
) -> tuple[Queue, Settings]:
    """A room with the auto rate on and a line longer than any test drains (nobody
    in the model trades a ticket for a pass: no-shows are the fixed rate's affair)."""
    settings = make_settings(
        redis_url, rate=most, rate_auto=True, max_active=10**7, noshow_compensation=False
    )
    queue = Queue(redis_client, settings.line())
    await queue.init(seq=10**7, now_ms=T0_S * 1000)
    return queue, settings


def _load(second: Second, origin: Origin) -> float:
    """The lookups a second that the governed rate sends the origin."""
    return second.target_rate * origin.per_admission


@pytest.mark.parametrize(
    ("capacity", "per_admission", "pages"),
    [(40.0, 1.0, 1.0), (40.0, 2.0, 0.0), (100.0, 1.0, 0.0), (200.0, 2.0, 1.0), (200.0, 1.0, 1.0)],
    ids=[
        "40-page-and-lookup",
        "40-two-lookups",
        "100-lookups",
        "200-page-and-two-lookups",
        "200-page-and-lookup",
    ],
)
async def test_the_auto_rate_finds_the_backends_capacity_within_a_minute_and_holds_there(
    redis_client: aioredis.Redis,
    redis_url: str,
    capacity: float,
    per_admission: float,
    pages: float,
) -> None:
    queue, settings = await _auto_room(redis_client, redis_url)
    origin = Origin(capacity=capacity, per_admission=per_admission, pages_per_admission=pages)
    seconds = await Simulation(redis_client, queue, settings, origin).run(240)
    log = trace(seconds)
    assert seconds[0].target_rate <= 20, log  # it starts low
    after = seconds[60:]
    shares = [_load(s, origin) / capacity for s in after]
    assert min(shares) >= 0.7 and max(shares) <= 1.1, log
    # The origin itself answers no 5xx once admission has found it.
    assert sum(s.errors for s in after) == 0, log
    state = await queue.read()
    assert state is not None and state.search.capacity is not None
    assert 0.9 * capacity <= state.search.capacity <= 1.1 * capacity, log
    assert state.search.per_admission == pytest.approx(per_admission, rel=0.15)
    # Every change said why.
    assert all(s.reason.startswith("auto: ") for s in seconds), log


async def test_the_auto_rate_never_passes_the_admins_rate(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _auto_room(redis_client, redis_url, most=25.0)
    origin = Origin(capacity=40.0, per_admission=1.0)
    simulation = Simulation(redis_client, queue, settings, origin)
    seconds = await simulation.run(60)
    assert max(s.target_rate for s in seconds) == 25.0, trace(seconds)
    state = await simulation.state()
    assert state.governor_kind == "ceiling" and "at the admin's rate, 25/s" in state.governor_reason
    # The admin lowers it below the search's rate: the governor follows at once.
    await queue.configure({"rate": "15"}, {"at": 0, "session": "t", "address": "-"}, 10)
    seconds = await simulation.run(5)
    assert all(s.target_rate <= 15.0 for s in seconds)
    state = await simulation.state()
    assert state.effective_rate == 15.0 and "held at the admin's rate" in state.governor_reason
    assert sum(s.errors for s in simulation.seconds) == 0


async def test_the_auto_rate_finds_a_capacity_that_grows(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _auto_room(redis_client, redis_url)
    origin = Origin(capacity=40.0, per_admission=1.0)
    simulation = Simulation(redis_client, queue, settings, origin)
    await simulation.run(100)
    origin.capacity = 60.0  # the board adds servers
    seconds = await simulation.run(200)
    log = trace(seconds)
    assert any(
        s.reason.startswith("auto: backend healthy") and "probing" in s.reason for s in seconds
    )
    shares = [_load(s, origin) / 60.0 for s in seconds[120:]]
    assert min(shares) >= 0.7 and max(shares) <= 1.1, log
    state = await simulation.state()
    assert state.search.capacity is not None and state.search.capacity >= 54, log


async def test_the_auto_rate_backs_off_when_the_backend_slows_down(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _auto_room(redis_client, redis_url)
    origin = Origin(capacity=40.0, per_admission=1.0)
    simulation = Simulation(redis_client, queue, settings, origin)
    await simulation.run(100)
    # A database gets slow: every lookup takes twice as long, half the capacity.
    origin.capacity, origin.service_ms = 20.0, 2 * origin.service_ms
    seconds = await simulation.run(120)
    log = trace(seconds)
    knee = next(s for s in seconds if s.phase == "drain")
    assert knee.t - seconds[0].t <= 3, log  # noticed within seconds
    assert "it answers only" in log or "it answered" in knee.reason
    shares = [_load(s, origin) / 20.0 for s in seconds[40:]]
    assert min(shares) >= 0.7 and max(shares) <= 1.1, log
    assert sum(s.errors for s in seconds) == 0, log
    state = await simulation.state()
    assert state.search.capacity is not None and 18 <= state.search.capacity <= 22, log


async def test_a_new_pacer_lease_holder_carries_on_from_the_search(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _auto_room(redis_client, redis_url)
    origin = Origin(capacity=40.0, per_admission=1.0, pages_per_admission=1.0)
    simulation = Simulation(redis_client, queue, settings, origin)
    await simulation.run(90)
    before = await simulation.state()
    assert before.search.phase == "hold" and before.search.capacity
    # The lease holder dies; another worker's governor (nothing in memory) goes on.
    simulation.governor = make_governor(queue, settings)
    seconds = await simulation.run(60)
    assert all(s.phase != "climb" for s in seconds), trace(seconds)
    shares = [_load(s, origin) / 40.0 for s in seconds]
    assert min(shares) >= 0.7 and max(shares) <= 1.1, trace(seconds)


async def test_before_its_first_decision_the_auto_rate_admits_at_the_start_rate_and_no_faster(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, _ = await _auto_room(redis_client, redis_url)
    # A no-show factor left from a fixed rate does not apply: the search measures
    # what the backend receives, no-shows included.
    await queue.govern(None, 2.0, "left over", 0)
    admitted = 0
    for second in range(1, 11):
        tick = await queue.tick("p", now_ms=T0_S * 1000 + second * 1000)
        assert tick is not None
        admitted += tick.advanced
    assert admitted == 10 * AUTO_START_RATE
    state = await queue.read()
    assert state is not None and state.admission_rate == AUTO_START_RATE


async def test_switching_the_auto_rate_off_and_on_again(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _auto_room(redis_client, redis_url)
    origin = Origin(capacity=40.0, per_admission=1.0)
    simulation = Simulation(redis_client, queue, settings, origin)
    await simulation.run(90)
    found = (await simulation.state()).search.capacity
    meta = {"at": 0, "session": "t", "address": "-"}
    await queue.configure({"rate_auto": "0", "rate": "30"}, meta, 10)
    await simulation.run(2)
    state = await simulation.state()
    assert not state.rate_auto and state.effective_rate is None and state.target_rate == 30
    assert state.governor_kind == "fixed" and state.search.phase == ""
    assert state.search.capacity == found  # kept for a search that starts again
    await queue.configure({"rate_auto": "1", "rate": "1000"}, meta, 10)
    seconds = await simulation.run(30)
    # Its first decision starts at the hold (what follows depends on the queue the
    # fixed rate left: a knee for it is no restart of the search).
    first = next(s for s in seconds if s.reason.startswith("auto: "))
    assert first.phase == "hold" and "the backend took before" in first.reason, trace(seconds)
    assert all(s.phase != "climb" for s in seconds), trace(seconds)
    shares = [_load(s, origin) / 40.0 for s in seconds]
    assert min(shares) >= 0.7 and max(shares) <= 1.1, trace(seconds)


async def test_a_full_concurrency_cap_stops_the_search_and_says_so(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    settings = make_settings(
        redis_url, rate=1000.0, rate_auto=True, max_active=300, noshow_compensation=False
    )
    queue = Queue(redis_client, settings.line())
    await queue.init(seq=10**7, now_ms=T0_S * 1000)
    simulation = Simulation(
        redis_client, queue, settings, Origin(capacity=100.0, per_admission=1.0)
    )
    seconds = await simulation.run(60)
    # 300 admissions in 60 s: the cap, not the backend, limits admission to 5/s.
    assert max(s.target_rate for s in seconds) <= 30.0, trace(seconds)
    state = await simulation.state()
    assert "300 active passes, the cap" in state.governor_reason
    assert "raise max active passes" in state.governor_reason


async def test_metrics_show_the_rate_mode_the_capacity_found_and_each_change_by_kind(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    settings = make_settings(redis_url, rate=400.0, rate_auto=True)
    queue = Queue(redis_client, settings.line())
    async with serving(create_app(settings)) as gw, student() as s:
        await wait_for_credit(gw.url)
        deadline = time.monotonic() + 5
        while (state := await queue.read()) is None or state.governor_kind != "start":
            assert time.monotonic() < deadline, "the search never started"
            await asyncio.sleep(0.1)
        found = Search(phase="hold", since=time.time(), capacity=38.4, per_admission=2.0)
        why = "auto: found about 38 lookups/s; holding at 16.3/s"
        await queue.govern(16.3, None, why, time.time(), kind="hold", search=found)
        await asyncio.sleep(0.3)  # the views' refresh
        async with s.get(gw.url + "/metrics") as response:
            text = await response.text()
    value = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert value[("waitroom_rate_mode", (("mode", "auto"),))] == 1
    assert value[("waitroom_rate_ceiling", ())] == 400
    assert value[("waitroom_effective_rate", ())] == 16.3
    assert value[("waitroom_admission_rate", ())] == 16.3  # no no-show factor in auto
    assert value[("waitroom_discovered_capacity_per_second", ())] == 38.4
    assert value[("waitroom_rate_changes_total", (("kind", "start"),))] == 1
    assert value[("waitroom_rate_changes_total", (("kind", "hold"),))] == 1
    assert ("waitroom_rate_last_change_timestamp_seconds", (("kind", "hold"),)) in value
    # Only kinds from the governor's fixed set ever become label values.
    kinds = {dict(k[1])["kind"] for k in value if k[0] == "waitroom_rate_changes_total"}
    assert kinds <= set(KINDS)


async def test_the_sample_measures_lookups_apart_from_pages(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, _ = await _auto_room(redis_client, redis_url)
    stats, sampler = BackendStats(), Sampler(redis_client, queue.keys)
    tick = Tick(True, 0, 10**7)
    for second in range(T0_S, T0_S + 5):
        for _ in range(30):  # pages, answered at once
            stats.sent(now=second)
            stats.record(0.004, True, now=second)
        for k in range(12):  # lookups: 10 answered well in 300 ms, 2 with a 502
            stats.sent(now=second, lookup=True)
            stats.record(0.3 if k < 10 else 2.0, k < 10, "status_5xx", now=second, lookup=True)
    await stats.flush(redis_client, queue.keys)
    sample = await sampler.maybe_sample(tick, await queue.read(), now=T0_S + 5.5)
    assert sample is not None
    assert sample.backend_per_s == 42 and sample.p95_ms is not None and sample.p95_ms < 500
    assert (sample.lookups_per_s, sample.lookups_recent_per_s, sample.lookups_sent_per_s) == (
        10,
        10,
        12,
    )
    assert sample.lookups_p95_ms is not None and sample.lookups_p95_ms > 1000
    assert sample.lookups_error_rate == pytest.approx(2 / 12, abs=1e-3)
    # An origin whose lookup paths match nothing: after a minute of traffic without
    # one lookup, every request stands for them (a window without one does not).
    for offset in range(6, 80):
        stats.sent(now=T0_S + offset)
        stats.record(0.05, True, now=T0_S + offset)
        await stats.flush(redis_client, queue.keys)
        sample = await sampler.maybe_sample(tick, await queue.read(), now=T0_S + offset + 0.5)
        assert sample is not None
        if offset == 20:
            assert sample.lookups_sent_per_s == 0 and sample.lookups_p95_ms is None
    assert sample.lookups_sent_per_s == 1 and 20 < (sample.lookups_p95_ms or 0) <= 50


async def test_the_sample_shows_a_queue_gone_in_its_newest_second(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, _ = await _auto_room(redis_client, redis_url)
    stats, sampler = BackendStats(), Sampler(redis_client, queue.keys)
    tick = Tick(True, 0, 10**7)
    # Three seconds of a queue (lookups in 800 ms), then two of none (in 80 ms); the
    # newest second of the window may still wait for a flush, the one before is whole.
    for second in range(T0_S, T0_S + 5):
        slow = second < T0_S + 3
        for _ in range(RECENT_MIN_LOOKUPS):
            stats.sent(now=second, lookup=True)
            stats.record(0.8 if slow else 0.08, True, now=second, lookup=True)
    await stats.flush(redis_client, queue.keys)
    sample = await sampler.maybe_sample(tick, await queue.read(), now=T0_S + 5.5)
    assert sample is not None
    assert sample.lookups_p95_ms is not None and sample.lookups_p95_ms > 500
    assert sample.lookups_recent_p95_ms is not None and sample.lookups_recent_p95_ms <= 100
    # Too few lookups in the newest whole second: its p95 would be noise, none is given.
    stats.sent(now=T0_S + 5, lookup=True)
    stats.record(0.08, True, now=T0_S + 5, lookup=True)
    await stats.flush(redis_client, queue.keys)
    sample = await sampler.maybe_sample(tick, await queue.read(), now=T0_S + 7.5)
    assert sample is not None and sample.lookups_recent_p95_ms is None


def test_a_climb_raises_the_rate_less_than_a_poll_plans_for() -> None:
    # A poll waits a quarter of the wait at today's rate (view.poll_interval), at most
    # CLIMBING_POLL_MAX_S while the search climbs: the raises within it must stay
    # under four times, or admitted students sleep through their admission.
    assert CLIMB ** math.ceil(CLIMBING_POLL_MAX_S / SETTLE_S) < 4
