"""The stress scripts' judgement: inversions, arrival curves, the simulation, wrk's output,
the options that choose the origin and the rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from hypercorn.asyncio import serve
from hypercorn.config import Config

from stress.harness import analysis, plain_app
from stress.harness.httpclient import Browser, HttpError
from stress.harness.record import Recorder, Student
from stress.harness.stack import Stack, Target
from stress.journeys import arrivals
from stress.journeys.student import Behaviour, Journey
from stress.scenarios import seed, simulate, spike
from stress.scenarios.baseline import parse_wrk
from tests.support.gateway_support import make_settings
from waitroom.line.state import Queue
from waitroom.shared.processes import free_port


def _student(i: int, sent: float, done: float, position: int) -> Student:
    st = Student(id=i, candidate=i, kind="browser", arrival=sent)
    st.join_sent, st.join_done, st.position = sent, done, position
    return st


def test_inversions_count_overtaking_but_not_joins_that_overlapped() -> None:
    rec = Recorder()
    # Frontier timeline: position 1 at t=10, 2 at t=11, 3 at t=12, 4 at t=13.
    rec.line = [(10.0 + k, 4, 1 + k, 1 + k) for k in range(4)]
    rec.students = [
        _student(0, 0.0, 0.1, 1),
        _student(1, 1.0, 1.1, 3),  # placed ahead of student 2, who arrived later: fair
        _student(2, 2.0, 2.1, 2),  # arrived after student 1's join returned, yet first in
        _student(3, 2.05, 2.2, 4),  # overlapped student 2's join: either order is fair
    ]
    eligible = analysis.eligible_at(rec)
    assert eligible == {0: 10.0, 1: 12.0, 2: 11.0, 3: 13.0}
    assert analysis.inversions(rec.students, eligible, analysis.GRANULARITY_S) == 1
    # Within the sampling granularity an overtaking is not judged an inversion.
    assert analysis.inversions(rec.students, eligible, 1.5) == 0


def test_achieved_rate_counts_only_while_a_backlog_waits() -> None:
    rec = Recorder()
    # 10 s with a long line at 50/s, then 10 s with nobody waiting and nothing to admit.
    rec.line = [(t * 1.0, 10_000, 50 * t, 50 * t) for t in range(11)]
    rec.line += [(10.0 + t, 500, 500, 500) for t in range(1, 11)]
    rate = analysis.achieved_rate(rec, 50.0)
    assert rate is not None
    assert rate["per_s"] == 50.0 and rate["seconds_with_a_line"] == 10.0
    assert rate["target_per_s"] == 50.0
    # The governor making up for no-shows: the pacer aims 10 % higher for half the time.
    rec.target = [(t, 55.0 if t < 5 else 50.0) for t, _, _, _ in rec.line]
    rate = analysis.achieved_rate(rec, 50.0)
    assert rate is not None and rate["target_per_s"] == 52.5


def test_release_curve_peaks_at_the_release_and_keeps_a_tail() -> None:
    times = arrivals.release(10_000, release_at_s=60, tail_s=120, until_s=900, seed=3)
    assert len(times) == 10_000 and times == sorted(times)
    assert times[0] >= 0 and times[-1] <= 900
    before = sum(1 for t in times if t < 60)
    assert before == 1000  # the early share, 10 %
    counts = arrivals.per_second(times)
    assert max(counts, key=lambda s: counts[s]) in range(60, 65)
    assert sum(1 for t in times if t > 360) > 300  # the long tail
    assert arrivals.spawn(3, 700) == [0.0, 1 / 700, 2 / 700]


async def test_the_simulation_calls_the_scripts_as_queue_does(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    settings = simulate.settings_for(100.0)
    sync = redis.Redis.from_url(redis_url)
    try:
        sim_queue = simulate.SimQueue(sync, settings)
        sim_queue.init(simulate.T0_MS)
        joined = sim_queue.join_many(5, simulate.T0_MS)
        assert [p for p, _, _ in joined] == [1, 2, 3, 4, 5]
        queue = Queue(redis_client, settings.line())
        after = await queue.join(now_ms=simulate.T0_MS)
        assert after is not None and after.position == 6 and not after.admitted
        frontier, seq, advanced = sim_queue.tick(simulate.T0_MS + 50)
        assert (frontier, seq, advanced) == (5, 6, 5)  # 100/s for 50 ms
        tick = await queue.tick("sim", now_ms=simulate.T0_MS + 60)
        assert tick is not None and tick.holder and tick.frontier == 6
        sim_queue.spend_many(3)
        state = await queue.read()
        assert state is not None and state.shown == 3 and state.seq == 6
    finally:
        sync.close()


def test_a_simulated_release_is_fair_paced_and_cheap_per_waiting_student(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    times = arrivals.release(20_000, release_at_s=10, tail_s=20, until_s=100, seed=2)
    sim = simulate.Simulation(make_settings(redis_url, rate=100.0, max_active=10_000), times)
    sim.progress = False
    simulate.run(sim, redis_url)
    s = simulate.summarise(sim)
    assert s["fairness"] == {"joined_out_of_tick_order": 0, "frontier_moved_back": 0}
    assert s["pacer"]["ratio"] is not None and abs(s["pacer"]["ratio"] - 1) < 0.01
    assert s["wait_s"]["max"] < 20_000 / 100 + 5
    assert s["eta"]["within_range_pct"] > 95
    m = s["memory"]
    assert m["peak_line"] > 5000
    assert m["per_waiting_student_bytes"] < 1  # the line is a counter, not a list
    assert m["spent_tickets"] == int(20_000 * sim.spend_share)
    assert 40 < m["per_spent_ticket_bytes"] < 400


WRK = """Running 1s test @ http://127.0.0.1:18777/
  1 threads and 4 connections
  Latency Distribution
     50%    1.94ms
     75%    3.48ms
     90%    6.40ms
     99%  1.52s
  1600 requests in 1.00s, 812.68KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 16
Requests/sec:   1597.42
"""


def test_wrk_output_is_read_with_its_units() -> None:
    assert parse_wrk(WRK) == {
        "rps": 1597.42,
        "p50_ms": 1.94,
        "p99_ms": 1520.0,
        "errors": 5.0,
        "non_2xx": 16.0,
    }


async def test_a_student_who_keeps_failing_gives_up_after_their_patience() -> None:
    port = free_port()  # nobody listens there: every connection is refused
    rec = Recorder()
    behaviour = Behaviour(think_s=(0.05, 0.1), patience_s=0.5, timeout_s=2.0)
    journey = Journey(Target("direct", "127.0.0.1", port), behaviour, rec, 2026, 1)
    st = Student(id=0, candidate=0, kind="browser", arrival=0.0)
    await journey.run(st)
    assert st.outcome == "gave-up" and st.result_at is None
    assert st.failures == st.requests >= 5
    assert rec.errors == {"GET / connect: ConnectionRefusedError": st.failures}


async def test_a_student_resends_on_a_connection_the_server_closed_while_idle() -> None:
    config = Config()
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    config.keep_alive_timeout = 0.3
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(plain_app.app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        browser = Browser("127.0.0.1", port, timeout_s=5.0)
        for _ in range(100):
            with contextlib.suppress(HttpError):
                first = await browser.request("GET", "/")
                break
            await asyncio.sleep(0.02)
        assert first.status == 200
        await asyncio.sleep(1.0)  # the server drops the idle connection meanwhile
        again = await browser.request("GET", "/")  # as a browser: resent, no error
        assert again.status == 200 and again.body == plain_app.BODY
        browser.close()
    finally:
        stop.set()
        await task


def _seed_args(*argv: str) -> argparse.Namespace:
    parser = seed.build_parser()
    return spike.check(parser, parser.parse_args(list(argv)))


def test_the_rate_is_just_under_the_legacy_origins_capacity_and_any_other_is_passed_on(
    tmp_path: Path,
) -> None:
    assert _seed_args().origin == "legacy" and _seed_args().rate == 180.0
    assert _seed_args("--capacity", "50").rate == 45.0
    assert _seed_args("--origin", "lean").rate == 200.0
    assert _seed_args("--rate", "150").rate == 150.0
    # A value the gateway works out itself reaches it as given.
    args = _seed_args("--rate", "auto")
    assert args.rate == "auto"
    stack = Stack(tmp_path / "r.sqlite3", waitroom=True, rate=args.rate, capacity=200.0)
    try:
        gateway = stack.gateway_args(8080)
        assert gateway[gateway.index("--rate") + 1] == "auto"
        # The concurrency cap still leaves room for the origin's capacity a second.
        assert int(gateway[gateway.index("--max-active") + 1]) >= 200 * 60
        backend = stack.backend_args(8100)
        assert backend[backend.index("--capacity") + 1] == "200"
        assert "--standalone" not in backend
    finally:
        stack.close()
    lean = Stack(tmp_path / "r.sqlite3", waitroom=False, rate=200.0)
    try:
        assert "--capacity" not in lean.backend_args(8100)
        assert "--standalone" in lean.backend_args(8100)
    finally:
        lean.close()


def test_the_legacy_origin_runs_one_backend_process(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _seed_args("--backend-workers", "2")
    assert "--backend-workers 2" in capsys.readouterr().err
    assert _seed_args("--origin", "lean", "--backend-workers", "2").backend_workers == 2


def test_the_calm_busy_page_is_told_apart_from_other_5xx() -> None:
    rec = Recorder()
    st = Student(id=0, candidate=0, kind="browser", arrival=0.0)
    rec.answer(st, "POST /result", 0.0, 503, True)  # the waiting room's busy page
    rec.answer(st, "POST /result", 0.0, 503, False)
    rec.answer(st, "POST /result", 0.0, 502, False)
    rec.answer(st, "POST /result", 0.0, 200, False)
    assert rec.calm_503 == 1
    assert rec.bad_5xx == {"POST /result 503": 1, "POST /result 502": 1}
    assert rec.failures == 3
