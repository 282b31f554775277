"""A synthetic origin for the governor's tests: a worker pool with a knee, on a
simulated clock, driven and measured by the real parts.

Below its capacity the origin answers in about its service time; past it lookups
queue, so latency climbs by the queue's length every second, and past its backlog
the excess is answered with a 502 after a wait, as a legacy result site's nginx
does. Admissions come from the real pacer (``advance.lua``, on the simulated
clock), each bringing ``per_admission`` lookups (through the pool) and
``pages_per_admission`` pages (answered at once) over the next few seconds; the
origin's answers go through the real ``BackendStats`` into Redis, the real
``Sampler`` turns them into one ``Sample`` a second, and the real ``Governor``
decides on it.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from waitroom.gateway.services import make_governor
from waitroom.line.state import Queue, RoomState
from waitroom.room.governor import Governor
from waitroom.room.telemetry import BackendStats, Sample, Sampler
from waitroom.settings import Settings

T0_S = 1_900_000_000


@dataclass
class Origin:
    capacity: float  # lookups a second at the knee
    service_ms: float = 80.0
    backlog: float = 150.0  # lookups that may wait; past it, 502 after a wait
    per_admission: float = 1.0  # lookups each admitted student makes
    # Pages each admitted student loads: answered at once (a site's cached pages),
    # never waiting for a worker, as the legacy origin answers its form.
    pages_per_admission: float = 0.0
    # Shares of an admission's requests that arrive 1, 2, 3 seconds after it.
    lag_shares: tuple[float, ...] = (0.3, 0.5, 0.2)
    seed: int = 1
    queued: float = 0.0
    _pending: dict[int, float] = field(default_factory=lambda: defaultdict(float))
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def admit(self, second: int, admitted: int) -> None:
        for later, share in enumerate(self.lag_shares, start=1):
            self._pending[second + later] += admitted * share

    def serve(self, second: int, stats: BackendStats) -> tuple[int, int, int]:
        """One second of the origin: (lookups arrived, answered well, answered 5xx)."""
        students = self._pending.pop(second, 0.0)
        at = second + 0.5
        for _ in range(self._noisy(students * self.pages_per_admission)):
            stats.sent(now=at)
            stats.record(self.service_ms / 1000 / 20, True, now=at)
        arrived = self._noisy(students * self.per_admission)
        before = self.queued
        self.queued += arrived
        for _ in range(arrived):
            stats.sent(now=at, lookup=True)
        # A pool's answers a second vary a little with where each second cuts them.
        served = int(min(self.queued, self.capacity * self._rng.uniform(0.96, 1.04)))
        self.queued -= served
        rejected = 0
        if self.queued > self.backlog:
            rejected = int(self.queued - self.backlog)
            self.queued -= rejected
        # Everyone answered this second waited behind the queue it found.
        wait_ms = 1000 * (before + self.queued) / 2 / self.capacity
        for _ in range(served):
            ms = self.service_ms * self._rng.uniform(0.8, 1.3) + wait_ms * self._rng.random()
            stats.record(ms / 1000, True, now=at, lookup=True)
        for _ in range(rejected):
            stats.record(2.0, False, "status_5xx", now=at, lookup=True)
        return arrived, served, rejected

    def _noisy(self, expected: float) -> int:
        """Students do not arrive on a grid: Poisson-like noise around the mean."""
        if not expected:
            return 0
        return max(0, round(self._rng.gauss(expected, math.sqrt(expected))))


@dataclass(frozen=True)
class Second:
    t: int  # simulated seconds since the start
    target_rate: float  # what the governor set (admissions per second)
    admitted: int
    arrived: int
    served: int
    errors: int
    phase: str
    capacity: float | None
    reason: str
    sample: Sample | None


class Simulation:
    """The pacer's lease holder's loop, one simulated second a step."""

    def __init__(
        self,
        client: aioredis.Redis,
        queue: Queue,
        settings: Settings,
        origin: Origin,
        governor: Governor | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.origin = origin
        self.governor = governor or make_governor(queue, settings)
        self.stats = BackendStats()
        self.sampler = Sampler(client, queue.keys)
        self.t = 0
        self.seconds: list[Second] = []

    async def run(self, seconds: int) -> list[Second]:
        """The next ``seconds`` seconds."""
        return [await self.step() for _ in range(seconds)]

    async def step(self) -> Second:
        now = T0_S + self.t
        advanced = 0
        for tenth in range(10):  # the pacer ticks every 100 ms, as by default
            tick = await self.queue.tick("simulation", now_ms=now * 1000 + 100 * tenth)
            assert tick is not None and tick.holder
            advanced += tick.advanced
        self.origin.admit(now, advanced)
        arrived, served, errors = self.origin.serve(now, self.stats)
        await self.stats.flush(self.client, self.queue.keys)
        state = await self.queue.read()
        assert state is not None
        sample = await self.sampler.maybe_sample(tick, state, now=now + 1.0)
        if sample is not None:
            await self.governor.update(sample, state)
        after = await self.queue.read()
        assert after is not None
        second = Second(
            self.t,
            after.target_rate,
            advanced,
            arrived,
            served,
            errors,
            after.search.phase,
            after.search.capacity,
            after.governor_reason,
            sample,
        )
        self.seconds.append(second)
        self.t += 1
        return second

    async def state(self) -> RoomState:
        state = await self.queue.read()
        assert state is not None
        return state


def trace(seconds: list[Second]) -> str:
    """One line a second, for a failing assertion's message."""
    lines = []
    for s in seconds:
        p95 = s.sample.p95_ms if s.sample else None
        lines.append(
            f"{s.t:4d} rate {s.target_rate:7.2f} adm {s.admitted:4d} arr {s.arrived:4d} "
            f"ok {s.served:4d} err {s.errors:4d} p95 {p95!s:>7} {s.phase:5s} "
            f"cap {s.capacity!s:>6}  {s.reason}"
        )
    return "\n".join(lines)
