"""From what a run recorded to the figures it reports.

Admission order. A student is *eligible* from the moment the frontier (sampled
from Redis every 50 ms) covers their position; one admitted at once on arrival is
eligible when their join returned. The moment a student noticed (their next poll)
is polling delay, not order. A pair of students is an *inversion* when one's join
had returned before the other's was sent, yet the later arrival became eligible
strictly earlier, by more than the sampling granularity. Students whose joins
overlapped in time arrived together: either order is fair.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter
from typing import Any

from stress.harness.record import LoaderCpu, Recorder, Student
from stress.harness.stack import Target

GRANULARITY_S = 0.25  # two frontier samples and a pacer tick
RATE_TOLERANCE = 0.1


def percentiles(values: list[float], qs: tuple[float, ...] = (50, 90, 99)) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    out = {
        f"p{q:g}": ordered[max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))]
        for q in qs
    }
    out["mean"] = sum(ordered) / len(ordered)
    out["max"] = ordered[-1]
    return out


def eligible_at(rec: Recorder) -> dict[int, float]:
    """Student id -> when the line reached them (see the module's docstring)."""
    times = [t for t, _, _, _ in rec.line]
    frontiers = [f for _, _, f, _ in rec.line]
    # The frontier never moves back within one line, so its running maximum is safe.
    running = 0
    for i, f in enumerate(frontiers):
        running = max(running, f)
        frontiers[i] = running
    out: dict[int, float] = {}
    for s in rec.students:
        if s.position is None:
            if s.admitted_at is not None and s.join_done is not None:
                out[s.id] = s.join_done  # admitted at once, nobody waiting
            continue
        i = bisect.bisect_left(frontiers, s.position)
        if i < len(times):
            out[s.id] = times[i]
    return out


def inversions(people: list[Student], eligible: dict[int, float], slack: float) -> int:
    """Pairs admitted against their arrival order (see the module's docstring)."""
    joined = [s for s in people if s.id in eligible and s.join_sent is not None and s.join_done]
    # For each student b, count a with a.join_done < b.join_sent and
    # eligible[a] > eligible[b] + slack: walk b by join_sent, adding each a once its
    # join is done, and keep the eligible times of those added in a sorted list.
    by_done = sorted(joined, key=lambda s: s.join_done or 0.0)
    by_sent = sorted(joined, key=lambda s: s.join_sent or 0.0)
    seen: list[float] = []
    i = count = 0
    for b in by_sent:
        while i < len(by_done) and (by_done[i].join_done or 0.0) < (b.join_sent or 0.0):
            bisect.insort(seen, eligible[by_done[i].id])
            i += 1
        count += len(seen) - bisect.bisect_right(seen, eligible[b.id] + slack)
    return count


def achieved_rate(rec: Recorder, rate: float) -> dict[str, float] | None:
    """Admissions per second, counted only between samples that both saw a backlog.

    A backlog is more than a fifth of a second's admissions (two pacer ticks): with
    fewer people waiting the pacer admits everyone there is, which measures the
    arrivals, not the pacer.
    """
    backlog = max(1.0, rate * 0.2)
    admitted = 0
    span = aimed = 0.0
    targets = [aim for _, aim in rec.target] if len(rec.target) == len(rec.line) else []
    for i, ((t0, seq0, f0, a0), (t1, seq1, f1, a1)) in enumerate(itertools.pairwise(rec.line)):
        if seq0 - f0 >= backlog and seq1 - f1 >= backlog:
            admitted += a1 - a0
            span += t1 - t0
            aimed += (targets[i] if targets else rate) * (t1 - t0)
    if span < 1.0:
        return None
    return {
        "seconds_with_a_line": span,
        "admitted": admitted,
        "per_s": admitted / span,
        # What the pacer aimed at over the same time, the governor's changes included.
        "target_per_s": aimed / span,
    }


def timeline(rec: Recorder) -> list[dict[str, Any]]:
    """Per second: requests, failures, latency percentiles, line length, admissions."""
    line_at: dict[int, tuple[int, int, int]] = {}
    for t, seq, frontier, admitted in rec.line:
        line_at[int(t)] = (seq, frontier, admitted)
    arrivals = Counter(int(s.arrival) for s in rec.students)
    last = max([*rec.seconds, *line_at, *arrivals], default=-1)
    out = []
    previous_admitted: int | None = None
    for second in range(last + 1):
        row: dict[str, Any] = {"t": second, "arrivals": arrivals.get(second, 0)}
        bucket = rec.seconds.get(second)
        row["requests"] = bucket.requests if bucket else 0
        row["failures"] = bucket.failures if bucket else 0
        if bucket and bucket.latency.get_total_count():
            for q in (50, 90, 99):
                row[f"p{q}_ms"] = bucket.latency.get_value_at_percentile(q) / 1000
        if second in line_at:
            seq, frontier, admitted = line_at[second]
            row["line"] = seq - frontier
            if previous_admitted is not None:
                row["admitted"] = admitted - previous_admitted
            previous_admitted = admitted
        out.append(row)
    return out


def summarise(rec: Recorder, cpu: LoaderCpu, target: Target, duration_s: float) -> dict[str, Any]:
    people = rec.students
    outcomes = Counter(s.outcome for s in people)
    routes = {}
    for route, hist in sorted(rec.routes.items()):
        routes[route] = {
            "count": hist.get_total_count(),
            "mean_ms": hist.get_mean_value() / 1000,
            **{f"p{q:g}_ms": hist.get_value_at_percentile(q) / 1000 for q in (50, 90, 99, 99.9)},
            "max_ms": hist.get_max_value() / 1000,
            "statuses": dict(rec.statuses[route]),
        }
    all_requests = rec.requests
    mean_ms = sum(r["mean_ms"] * r["count"] for r in routes.values()) / max(
        1, sum(r["count"] for r in routes.values())
    )
    in_line = [s.admitted_at - s.arrival for s in people if s.admitted_at is not None]
    to_result = [
        s.result_at - s.arrival for s in people if s.result_at is not None and s.outcome == "result"
    ]
    summary: dict[str, Any] = {
        "target": target.name,
        "students": len(people),
        "outcomes": dict(outcomes),
        "got_own_marksheet": outcomes.get("result", 0),
        "wrong_marksheet": outcomes.get("wrong-result", 0),
        "requests": all_requests,
        "failures": rec.failures,
        "failure_pct": 100 * rec.failures / all_requests if all_requests else 0.0,
        "mean_ms": mean_ms,
        "duration_s": duration_s,
        "rps": all_requests / duration_s if duration_s else 0.0,
        "routes": routes,
        "bad_5xx": dict(rec.bad_5xx),
        "calm_503": rec.calm_503,
        "errors": dict(rec.errors),
        "timeouts": rec.timeouts,
        "time_in_line_s": percentiles(in_line),
        "time_to_result_s": percentiles(to_result),
        "loader": {
            "cpu_mean": cpu.mean,
            "cpu_max": max(cpu.shares, default=0.0),
            "saturated_seconds": cpu.saturated_seconds,
        },
    }
    if target.name == "waitroom":
        summary.update(_line_figures(rec, target))
    return summary


def _line_figures(rec: Recorder, target: Target) -> dict[str, Any]:
    people = rec.students
    eligible = eligible_at(rec)
    polled = [
        s.admitted_at - eligible[s.id]
        for s in people
        if s.admitted_at is not None and s.id in eligible and s.position is not None
    ]
    # From the line reaching a student to their result: what the origin's load lags
    # admission by (the poll that tells them, the form, their own pause, the lookup).
    reached = [
        s.result_at - eligible[s.id]
        for s in people
        if s.result_at is not None and s.id in eligible and s.position is not None
    ]
    by_kind = {
        kind: percentiles(
            [
                s.admitted_at - eligible[s.id]
                for s in people
                if s.kind == kind
                and s.admitted_at is not None
                and s.id in eligible
                and s.position is not None
            ]
        )
        for kind in ("browser", "app")
    }
    early = sum(
        1
        for s in people
        if s.admitted_at is not None
        and s.position is not None
        and s.id in eligible
        and s.admitted_at + GRANULARITY_S < eligible[s.id]
    )
    errors = []
    inside = 0
    for s in people:
        if s.eta_s is None or s.eta_shown_at is None or s.id not in eligible:
            continue
        had = eligible[s.id] - s.eta_shown_at
        errors.append(s.eta_s - had)
        low, high = s.eta_range_s or (s.eta_s, s.eta_s)
        inside += low - GRANULARITY_S <= had <= high + GRANULARITY_S
    configured = target.rate or 0.0
    rate = achieved_rate(rec, configured)
    moved = [len(s.positions_seen) > 1 for s in people]
    return {
        "admission_inversions": inversions(people, eligible, GRANULARITY_S),
        "admitted_ahead_of_the_line": early,
        "lost_place": sum(moved),
        "polling_delay_s": percentiles(polled),
        "polling_delay_by_kind_s": by_kind,
        "admission_to_result_s": percentiles(reached),
        "eta": {
            "students": len(errors),
            "error_s": percentiles([abs(e) for e in errors]),
            "signed_mean_s": sum(errors) / len(errors) if errors else None,
            "within_range_pct": 100 * inside / len(errors) if errors else None,
        },
        "rate": {
            "configured_per_s": configured,
            "achieved": rate,
            # Against the pacer's aim: the configured rate as the governor set it
            # (lower for a struggling backend, higher to make up for no-shows).
            "ratio": rate["per_s"] / rate["target_per_s"]
            if rate and rate["target_per_s"]
            else None,
            "ratio_to_configured": rate["per_s"] / configured if rate and configured else None,
        },
        "longest_line": max((seq - f for _, seq, f, _ in rec.line), default=0),
    }
