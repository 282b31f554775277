"""Runs a crowd of students against a target and watches the line while it does.

All students live in this one process (asyncio, uvloop when installed): one task per
student, started at its arrival time. Two watchers run beside them: the line, read
straight from Redis every 50 ms (the frontier's timeline, against which admission
order and rate are judged), and the loader itself, whose CPU use is sampled every
second; a loader that saturates its core makes every latency figure suspect, so
the run says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import resource
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from stress.harness.record import SATURATED, LoaderCpu, Recorder, Student
from stress.harness.stack import Target
from stress.journeys.student import Behaviour, Journey
from waitroom.line.keys import RoomKeys
from waitroom.line.state import admission_rate
from waitroom.line.store import connect

LINE_SAMPLE_S = 0.05


@dataclass
class Crowd:
    arrivals: list[float]
    behaviour: Behaviour
    candidates: int  # size of the sample data; each student is a different candidate
    seed: int
    # Students still busy this long after the last arrival are recorded as pending.
    deadline_s: float = 600.0
    rng_seed: int = 1
    progress: bool = True


def students(crowd: Crowd) -> list[Student]:
    b = crowd.behaviour
    rng = random.Random(crowd.rng_seed)
    picks = (
        rng.sample(range(crowd.candidates), len(crowd.arrivals))
        if len(crowd.arrivals) <= crowd.candidates
        else [rng.randrange(crowd.candidates) for _ in crowd.arrivals]
    )
    out = []
    for i, (t, k) in enumerate(zip(crowd.arrivals, picks, strict=True)):
        out.append(
            Student(
                id=i,
                candidate=k,
                kind="app" if rng.random() < b.app_share else "browser",
                arrival=t,
                abandons_after=rng.uniform(*b.abandon_after_s)
                if rng.random() < b.abandon_share
                else None,
                impatient=rng.random() < b.impatient_share,
            )
        )
    return out


def governed(rate: float, effective: Any, noshow: Any) -> float:
    """The pacer's aim, as advance.lua works it out (``waitroom.line.state.admission_rate``,
    the fixed rate's: the governor's rate when lower, times the no-show factor)."""
    factor = 1.0 if noshow is None else float(noshow)
    return admission_rate(rate, None if effective is None else float(effective), factor, False)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _watch_line(target: Target, rec: Recorder, stop: asyncio.Event) -> None:
    assert target.redis_url is not None
    client = connect(target.redis_url)
    state = RoomKeys(target.room).state
    fields = ("seq", "frontier", "admitted", "effective_rate", "noshow_factor")
    rate = target.rate or 0.0
    try:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # a missed sample is no news
                seq, frontier, admitted, effective, noshow = await client.hmget(state, fields)
                if seq is not None:
                    t = rec.now()
                    rec.line.append((t, int(seq), int(frontier or 0), int(admitted or 0)))
                    rec.target.append((t, governed(rate, effective, noshow)))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), LINE_SAMPLE_S)
    finally:
        await client.aclose()


async def _watch_loader(
    rec: Recorder, people: list[Student], cpu: LoaderCpu, stop: asyncio.Event, show: bool
) -> None:
    last_cpu, last_wall = _cpu_s(), time.monotonic()
    last_requests = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        now_cpu, now_wall = _cpu_s(), time.monotonic()
        share = (now_cpu - last_cpu) / max(1e-6, now_wall - last_wall)
        cpu.shares.append(share)
        last_cpu, last_wall = now_cpu, now_wall
        if show:
            t = rec.now()
            arrived = sum(1 for s in people if s.arrival <= t)
            waiting = sum(1 for s in people if s.position is not None and s.admitted_at is None)
            done = sum(1 for s in people if s.outcome != "pending")
            got = sum(1 for s in people if s.outcome == "result")
            requests = rec.requests
            line = rec.line[-1] if rec.line else None
            queue = f" line {line[1] - line[2]:>6}" if line else ""
            flag = "  LOADER SATURATED" if share >= SATURATED else ""
            print(
                f"\r{t:6.0f}s arrived {arrived:>6} waiting {waiting:>6}{queue} "
                f"results {got:>6} done {done:>6} req/s {requests - last_requests:>6} "
                f"failures {rec.failures:>6} loader cpu {share:4.0%}{flag}   ",
                end="",
                file=sys.stderr,
                flush=True,
            )
            last_requests = requests
    if show:
        print(file=sys.stderr)


async def run(target: Target, crowd: Crowd) -> tuple[Recorder, LoaderCpu]:
    """Run the whole crowd; returns what was recorded and the loader's CPU use."""
    rec = Recorder()
    people = students(crowd)
    rec.students = people
    journey = Journey(target, crowd.behaviour, rec, crowd.seed, crowd.rng_seed)
    stop = asyncio.Event()
    cpu = LoaderCpu()
    cpu0, wall0 = _cpu_s(), time.monotonic()
    watchers: list[asyncio.Task[None]] = [
        asyncio.create_task(_watch_loader(rec, people, cpu, stop, crowd.progress))
    ]
    if target.redis_url:
        watchers.append(asyncio.create_task(_watch_line(target, rec, stop)))
    tasks: list[asyncio.Task[None]] = []
    try:
        for st in people:
            delay = st.arrival - rec.now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(_start(journey.run(st)))
        last = people[-1].arrival if people else 0.0
        remaining = max(1.0, last + crowd.deadline_s - rec.now())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=remaining)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    finally:
        stop.set()
        await asyncio.gather(*watchers, return_exceptions=True)
        for task in tasks:
            task.cancel()
    cpu.total_s, cpu.wall_s = _cpu_s() - cpu0, time.monotonic() - wall0
    return rec, cpu


def _start(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(coro)


def run_sync(target: Target, crowd: Crowd) -> tuple[Recorder, LoaderCpu]:
    """``run`` in a fresh event loop (uvloop when installed)."""
    # Every student holds a connection: allow as many as the system lets us.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        return runner.run(run(target, crowd))
