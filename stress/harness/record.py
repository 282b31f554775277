"""What one run records: every request's latency and outcome, and every student's story.

Latencies go into HDR histograms (one per route, and one per route per second for
the plot over time): constant memory and exact percentiles to three significant
digits however many requests a run makes. Times are seconds since the run's start,
from one monotonic clock.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

# Microseconds, up to two minutes: the longest a request can take is its timeout.
_LOW_US, _HIGH_US, _DIGITS = 1, 120_000_000, 3

SATURATED = 0.9  # share of one core above which the loader is the bottleneck


def histogram() -> HdrHistogram:
    return HdrHistogram(_LOW_US, _HIGH_US, _DIGITS)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


@dataclass
class Student:
    """One simulated student, filled in as the journey goes on."""

    id: int
    candidate: int  # index into the sample data
    kind: str  # "browser" or "app"
    arrival: float  # scheduled arrival
    abandons_after: float | None = None  # seconds in line before giving up, if ever
    impatient: bool = False
    join_sent: float | None = None
    join_done: float | None = None
    position: int | None = None
    positions_seen: set[int] = field(default_factory=set)
    # First estimate with a number that the student was shown, and when.
    eta_s: float | None = None
    eta_range_s: tuple[float, float] | None = None
    eta_shown_at: float | None = None
    admitted_at: float | None = None  # when the pass (or the direct form) arrived
    result_at: float | None = None
    outcome: str = "pending"  # result, wrong-result, abandoned, gave-up, pending
    requests: int = 0
    failures: int = 0
    failing_since: float | None = None  # start of the current run of failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "candidate": self.candidate,
            "kind": self.kind,
            "arrival": self.arrival,
            "join_sent": self.join_sent,
            "join_done": self.join_done,
            "position": self.position,
            "positions_seen": sorted(self.positions_seen),
            "eta_s": self.eta_s,
            "eta_range_s": self.eta_range_s,
            "eta_shown_at": self.eta_shown_at,
            "admitted_at": self.admitted_at,
            "result_at": self.result_at,
            "outcome": self.outcome,
            "requests": self.requests,
            "failures": self.failures,
        }


@dataclass
class Second:
    """Everything that happened in one wall-clock second of the run."""

    requests: int = 0
    failures: int = 0
    latency: HdrHistogram = field(default_factory=histogram)


@dataclass
class LoaderCpu:
    """The load generator's own CPU over a run: a saturated loader's figures are floors."""

    shares: list[float] = field(default_factory=list)  # per second, of one core
    total_s: float = 0.0
    wall_s: float = 0.0

    @property
    def mean(self) -> float:
        return self.total_s / self.wall_s if self.wall_s else 0.0

    @property
    def saturated_seconds(self) -> int:
        return sum(1 for s in self.shares if s >= SATURATED)


class Recorder:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.routes: dict[str, HdrHistogram] = {}
        self.statuses: dict[str, Counter[str]] = {}
        # 5xx answers other than the deliberate ones (a 503 with Retry-After).
        self.bad_5xx: Counter[str] = Counter()
        # The deliberate ones: the waiting room's calm "busy, try again" page.
        self.calm_503 = 0
        self.errors: Counter[str] = Counter()
        self.timeouts = 0
        self.seconds: dict[int, Second] = {}
        self.students: list[Student] = []
        # (t, seq, frontier, admitted) from Redis, when there is a line to watch.
        self.line: list[tuple[float, int, int, int]] = []
        # (t, admissions a second the pacer aims at): the configured rate as the
        # governor (waitroom/room/governor.py) adjusts it, sampled with ``line``.
        self.target: list[tuple[float, float]] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def _second(self, t: float) -> Second:
        key = int(t)
        second = self.seconds.get(key)
        if second is None:
            second = self.seconds[key] = Second()
        return second

    def answer(
        self, student: Student, route: str, sent: float, status: int, retry_after: bool
    ) -> bool:
        """Record an answer; True when it counts as a failure (locust's rule: >= 400)."""
        done = self.now()
        micros = max(1, int((done - sent) * 1e6))
        hist = self.routes.get(route)
        if hist is None:
            hist = self.routes[route] = histogram()
            self.statuses[route] = Counter()
        hist.record_value(micros)
        self.statuses[route][status_class(status)] += 1
        if status == 503:
            self.statuses[route]["503"] += 1
        if status == 503 and retry_after:
            self.calm_503 += 1
        elif status >= 500:
            self.bad_5xx[f"{route} {status}"] += 1
        second = self._second(done)
        second.requests += 1
        second.latency.record_value(micros)
        failed = status >= 400
        student.requests += 1
        if failed:
            second.failures += 1
            student.failures += 1
        return failed

    def error(self, student: Student, route: str, kind: str) -> None:
        """A request that got no answer: refused, reset or timed out."""
        if kind == "timeout":
            self.timeouts += 1
        else:
            self.errors[f"{route} {kind}"] += 1
        second = self._second(self.now())
        second.requests += 1
        second.failures += 1
        student.requests += 1
        student.failures += 1

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.seconds.values())

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.seconds.values())
