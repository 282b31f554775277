"""One crowd against one freshly started stack: the step every HTTP scenario repeats.

The stack is new for each run, so one run's line, caches and connections never
colour the next. With pinning, the servers share core 0 and the load generator (this
process) gets the rest, so the two do not fight over a core they both need.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stress.harness import analysis
from stress.harness.plots import Series
from stress.harness.processes import SERVER_CORE, pinned
from stress.harness.record import SATURATED
from stress.harness.stack import Stack
from stress.journeys import crowd


@dataclass
class Outcome:
    label: str
    summary: dict[str, Any]
    timeline: list[dict[str, Any]]
    series: Series
    logs: dict[str, str]


def _loader_cores(pin: bool) -> contextlib.AbstractContextManager[None]:
    """The load generator (this process) off the servers' core when they are pinned."""
    return pinned(os.sched_getaffinity(0) - {SERVER_CORE} if pin else set())


def one(
    label: str,
    db: Path,
    plan: crowd.Crowd,
    *,
    waitroom: bool,
    rate: float | str,
    pin: bool,
    capacity: float | None = None,
    gateway_workers: int = 1,
    backend_workers: int = 1,
    server: str = "hypercorn",
) -> Outcome:
    print(f"{label}: starting the stack", file=sys.stderr, flush=True)
    stack = Stack(
        db,
        waitroom=waitroom,
        rate=rate,
        capacity=capacity,
        gateway_workers=gateway_workers,
        backend_workers=backend_workers,
        server=server,
        pin=pin,
    )
    with stack as target, _loader_cores(pin):
        rec, cpu = crowd.run_sync(target, plan)
        # Faults the servers logged are part of the story (and of a failed run's why).
        logs = {name: stack.log(name) for name in stack.pids()}
        origin = stack.origin_counters()
    duration = rec.now()
    summary = analysis.summarise(rec, cpu, target, duration)
    summary["label"] = label
    summary["stack"] = {
        "waitroom": waitroom,
        "rate": rate if waitroom else None,
        "origin": "legacy" if capacity is not None else "lean",
        "capacity_per_s": capacity,
        "gateway_workers": gateway_workers if waitroom else None,
        "backend_workers": backend_workers,
        "server": server,
        "pinned": stack.pin,
    }
    # The origin's own account (waitroom/lookup/capacity.py): through the waiting room its
    # 5xx reach no student, who sees the calm busy page instead.
    summary["origin"] = origin
    timeline = analysis.timeline(rec)
    to_result = [
        s.result_at - s.arrival
        for s in rec.students
        if s.result_at is not None and s.outcome == "result"
    ]
    series = Series(label, timeline, to_result, target.rate, len(rec.students))
    warn_loader(summary)
    return Outcome(label, summary, timeline, series, logs)


def warn_loader(summary: dict[str, Any]) -> None:
    saturated = summary["loader"]["saturated_seconds"]
    if saturated:
        print(
            f"warning: {summary['label']}: the load generator used over "
            f"{SATURATED:.0%} of a core for {saturated} s; latencies in those "
            "seconds include its own queueing",
            file=sys.stderr,
        )
