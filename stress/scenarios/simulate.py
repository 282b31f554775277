"""``simulate``: a CBSE-size release (2,000,000 students) through the real queue
scripts in a real Redis, on a simulated clock, with no HTTP.

Arrivals follow the ``release`` curve. Simulated time moves in pacer ticks: each
tick, that tick's arrivals run ``join.lua`` (pipelined, a thousand a round trip),
then one ``advance.lua`` tick moves the frontier, and every student the line
reached comes back and trades their ticket (``spend.lua``, as ``Queue.spend``).
Each student is shown the estimate the gateway would show at joining
(``waitroom.room.estimate.wait_estimate``, fed the admission rate measured as the
view measures it, ``waitroom.room.snapshot.achieved_rate``). The governor
(``waitroom.room.governor``) is not simulated: it follows the backend's health, and
there is no backend here. Reported: fairness (arrival order against admission
order), the estimate's error, Redis memory per waiting and per admitted student, and
how closely the pacer keeps the configured rate.

``--redis sentinel`` and ``--redis cluster`` run the same on a primary with a
replica watched by three sentinels, or on a three-primary cluster with replicas
(``waitroom.devtools.embedded_ha``), reached through ``waitroom.line.store`` as the gateway
reaches them.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import math
import secrets
import sys
import time
from array import array
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from stress.harness import plots, report
from stress.harness.analysis import percentiles
from stress.journeys import arrivals
from waitroom.devtools.embedded_ha import started
from waitroom.line.keys import RoomKeys
from waitroom.line.scripts import ADVANCE, INIT, JOIN, SPEND
from waitroom.line.store import SyncClient, connect_sync, is_cluster
from waitroom.room.estimate import wait_estimate
from waitroom.room.snapshot import (
    RATE_WINDOW_S,
    achieved_rate,
    capacity_rate,
)
from waitroom.settings import Settings

BATCH = 1000
T0_MS = 1_800_000_000_000  # any fixed epoch: the scripts only compare times


class SimQueue:
    """The queue scripts called in pipelines, with ``Queue``'s arguments.

    ``Queue`` waits for each reply, a round trip per student: two million of them
    would take most of an hour. The scripts and their arguments are the same (the
    tests check this against ``Queue`` itself).
    """

    def __init__(self, client: SyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.keys = RoomKeys(settings.room)
        self.key_ttl = str(2 * settings.ticket_ttl_s)
        self.active_ms = str(settings.active_window_s * 1000)
        self._join = JOIN.register(client)
        self._advance = ADVANCE.register(client)
        self._init = INIT.register(client)
        self._spend = SPEND.register(client)

    def init(self, now_ms: int) -> None:
        k = self.keys
        self._init(keys=[k.state, k.config], args=[0, 0, "sim", self.key_ttl, now_ms, ""])

    def join_many(self, count: int, now_ms: int) -> list[tuple[int, int, bool]]:
        """``count`` joins as one block, as a gateway worker coalesces a moment's
        arrivals (``Queue.join_block``): (position, frontier, admitted) each."""
        k = self.keys
        reply = self._join(
            keys=[k.state, k.active, k.config],
            args=[self.settings.max_active, self.active_ms, self.key_ttl, now_ms, count, 0, 0, 0],
        )
        frontier = int(reply[0])
        return [(int(p), frontier, int(p) <= frontier) for p in reply[2:]]

    def tick(self, now_ms: int) -> tuple[int, int, int]:
        """One pacer tick: (frontier, seq, advanced)."""
        k = self.keys
        s = self.settings
        reply = self._advance(
            keys=[k.state, k.active, k.config, k.lease],
            args=[
                "sim",
                int(s.pacer_lease_s * 1000),
                s.rate,
                s.max_active,
                self.active_ms,
                self.key_ttl,
                now_ms,
            ],
        )
        return int(reply[1]), int(reply[2]), int(reply[3])

    def spend_many(self, count: int) -> None:
        """What ``Queue.spend`` does for each student who comes back for a pass."""
        ttl = self.settings.ticket_ttl_s
        spent = [self.keys.spent(secrets.token_urlsafe(9)) for _ in range(count)]
        if spent:
            self._spend(keys=[self.keys.state, *spent], args=[ttl])

    def used_memory(self) -> int:
        """``used_memory`` of the server that holds the room (on a cluster, its node)."""
        if is_cluster(self.client):
            node = self.client.get_node_from_key(self.keys.state)  # type: ignore[union-attr]
            info: dict[str, Any] = self.client.info("memory", target_nodes=node)
            if "used_memory" not in info:  # keyed by node
                info = next(iter(info.values()))
        else:
            info = self.client.info("memory")
        return int(info["used_memory"])

    def line_bytes(self) -> tuple[int, int, int]:
        """(bytes of the state, config and lease keys, of the active set, its members).

        The first is all that waiting students cost; the active set holds one member
        per admission of the last ``active_window_s``.
        """
        k = self.keys
        fixed = sum(int(self.client.memory_usage(key) or 0) for key in (k.state, k.config, k.lease))
        active = int(self.client.memory_usage(k.active) or 0)
        return fixed, active, int(self.client.zcard(k.active))


@dataclass
class RateMeter:
    """The admission rate as the view measures it (``achieved_rate``), on simulated time."""

    capacity: float
    samples: deque[tuple[float, int, int]] = field(default_factory=deque)

    def observe(self, t: float, admitted: int, waiting: int) -> float:
        self.samples.append((t, admitted, waiting))
        while t - self.samples[0][0] > RATE_WINDOW_S:
            self.samples.popleft()
        t0, a0, w0 = self.samples[0]
        return achieved_rate(t - t0, w0, admitted - a0, self.capacity)


@dataclass
class Simulation:
    settings: Settings
    arrivals: list[float]
    spend_share: float = 0.95  # the rest never come back (abandoned)
    progress: bool = True
    positions: array[int] = field(default_factory=lambda: array("q"))
    joined_frontier: array[int] = field(default_factory=lambda: array("q"))
    eta_mid: array[float] = field(default_factory=lambda: array("d"))
    eta_low: array[float] = field(default_factory=lambda: array("d"))
    eta_high: array[float] = field(default_factory=lambda: array("d"))
    # (t, frontier) after every tick that moved it; (t, seq, frontier, admitted) per second
    frontier_times: array[float] = field(default_factory=lambda: array("d"))
    frontier_values: array[int] = field(default_factory=lambda: array("q"))
    seconds: list[tuple[int, int, int, int]] = field(default_factory=list)
    # (t, waiting, used_memory, (line_bytes), spent tickets so far)
    memory: list[tuple[float, int, int, tuple[int, int, int], int]] = field(default_factory=list)
    immediate: int = 0
    wall_s: float = 0.0


def run(sim: Simulation, redis_url: str) -> None:
    s = sim.settings
    client = connect_sync(redis_url)
    q = SimQueue(client, s)
    meter = RateMeter(capacity_rate(s.rate, s.max_active, s.active_window_s))
    tick_ms = round(s.pacer_tick_s * 1000)
    q.init(T0_MS)
    sim.memory.append((0.0, 0, q.used_memory(), q.line_bytes(), 0))
    started = time.monotonic()
    n = len(sim.arrivals)
    i = 0
    now_ms = T0_MS
    seq = frontier = admitted = 0
    spent_upto = 0
    step = 0
    while i < n or frontier < seq:
        now_ms += tick_ms
        step += 1
        t = (now_ms - T0_MS) / 1000
        j = bisect.bisect_right(sim.arrivals, t, lo=i)
        rate = meter.observe(t, admitted, seq - frontier)
        while i < j:
            count = min(BATCH, j - i)
            for position, at_join, now_admitted in q.join_many(count, now_ms):
                sim.positions.append(position)
                sim.joined_frontier.append(at_join)
                if now_admitted:
                    sim.immediate += 1
                    sim.eta_mid.append(0.0)
                    sim.eta_low.append(0.0)
                    sim.eta_high.append(0.0)
                else:
                    est = wait_estimate(
                        position,
                        frontier,
                        rate,
                        refresh_interval_s=s.refresh_interval_s,
                        pacer_tick_s=s.pacer_tick_s,
                    )
                    assert est is not None
                    sim.eta_mid.append(est.mid_s)
                    sim.eta_low.append(est.low_s)
                    sim.eta_high.append(est.high_s)
            i += count
        new_frontier, seq, _ = q.tick(now_ms)
        admitted = new_frontier  # every position up to the frontier was admitted
        if new_frontier != frontier:
            sim.frontier_times.append(t)
            sim.frontier_values.append(new_frontier)
        frontier = new_frontier
        # Those the line reached come back and trade their tickets (most of them).
        due = int(frontier * sim.spend_share) - spent_upto
        while due > 0:
            count = min(BATCH * 5, due)
            q.spend_many(count)
            spent_upto += count
            due -= count
        if step % round(1000 / tick_ms) == 0:
            sim.seconds.append((int(t), seq, frontier, admitted))
            if step % round(60_000 / tick_ms) == 0:
                sim.memory.append((t, seq - frontier, q.used_memory(), q.line_bytes(), spent_upto))
                if sim.progress:
                    print(
                        f"\rsimulated {t:7.0f} s  joined {i:>9,}  line {seq - frontier:>9,}  "
                        f"admitted {frontier:>9,}  wall {time.monotonic() - started:5.0f} s",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
    end = (now_ms - T0_MS) / 1000
    sim.memory.append((end, seq - frontier, q.used_memory(), q.line_bytes(), spent_upto))
    sim.wall_s = time.monotonic() - started
    if sim.progress:
        print(file=sys.stderr)
    client.close()


def admitted_at(sim: Simulation, position: int) -> float:
    k = bisect.bisect_left(sim.frontier_values, position)
    return sim.frontier_times[k]


def inversions(sim: Simulation) -> tuple[int, int]:
    """(pairs joined in a later tick than the other but placed ahead, frontier moves back).

    Students of the same tick arrived together; either order is fair. Admission
    follows position (the frontier), so its order against arrival is checked too.
    """
    bad_pairs = 0
    tick = sim.settings.pacer_tick_s
    previous_max = 0
    current_tick = -1
    current_min = math.inf
    current_max = 0
    for t, p in zip(sim.arrivals, sim.positions, strict=True):
        k = math.ceil(t / tick)
        if k != current_tick:
            previous_max = max(previous_max, current_max)
            current_tick, current_min, current_max = k, math.inf, 0
        if p < previous_max:
            bad_pairs += 1  # at least one pair; the exact count needs no more when zero
        current_min = min(current_min, p)
        current_max = max(current_max, p)
    back = sum(1 for a, b in itertools.pairwise(sim.frontier_values) if b < a)
    return bad_pairs, back


def summarise(sim: Simulation) -> dict[str, Any]:
    s = sim.settings
    n = len(sim.arrivals)
    waits: list[float] = []
    errors: list[float] = []
    relative: list[float] = []
    inside = 0
    for idx in range(n):
        p = sim.positions[idx]
        wait = admitted_at(sim, p) - sim.arrivals[idx]
        waits.append(wait)
        if sim.eta_high[idx] > 0:
            errors.append(sim.eta_mid[idx] - wait)
            if wait >= 1:
                relative.append(100 * abs(sim.eta_mid[idx] - wait) / wait)
            # The view's range is in whole seconds; a tick's rounding is not a miss.
            inside += sim.eta_low[idx] - s.pacer_tick_s <= wait <= sim.eta_high[idx] + 1
    out_of_order, frontier_back = inversions(sim)
    backlog = max(1.0, s.rate * 0.2)
    busy = [
        (b[0], b[3] - a[3])
        for a, b in itertools.pairwise(sim.seconds)
        if a[1] - a[2] >= backlog and b[1] - b[2] >= backlog
    ]
    per_second = [adm for _, adm in busy]
    peak = max(sim.memory, key=lambda m: m[1])
    base, final = sim.memory[0], sim.memory[-1]
    # Everything that is neither the line's keys nor the empty server: spent tickets.
    spent_bytes = (final[2] - base[2]) - (sum(final[3][:2]) - sum(base[3][:2]))
    busiest = max(sim.memory, key=lambda m: m[3][2])

    return {
        "students": n,
        "rate": s.rate,
        "max_active": s.max_active,
        "pacer_tick_s": s.pacer_tick_s,
        "simulated_s": sim.seconds[-1][0] if sim.seconds else 0,
        "wall_s": sim.wall_s,
        "admitted_at_once": sim.immediate,
        "fairness": {
            "joined_out_of_tick_order": out_of_order,
            "frontier_moved_back": frontier_back,
        },
        "wait_s": percentiles(waits, (50, 90, 99)),
        "eta": {
            "students": len(errors),
            "abs_error_s": percentiles([abs(e) for e in errors], (50, 90, 99)),
            "relative_error_pct": percentiles(relative, (50, 90, 99)),
            "signed_mean_s": sum(errors) / len(errors) if errors else None,
            "within_range_pct": 100 * inside / len(errors) if errors else None,
        },
        "pacer": {
            "seconds_with_backlog": len(per_second),
            "mean_per_s": sum(per_second) / len(per_second) if per_second else None,
            "min_per_s": min(per_second, default=None),
            "max_per_s": max(per_second, default=None),
            "ratio": sum(per_second) / len(per_second) / s.rate if per_second else None,
        },
        "memory": {
            "base_bytes": base[2],
            "peak_line": peak[1],
            "line_keys_empty_bytes": base[3][0],
            "line_keys_at_peak_bytes": peak[3][0],
            "per_waiting_student_bytes": (peak[3][0] - base[3][0]) / peak[1] if peak[1] else None,
            "most_active": busiest[3][2],
            "per_active_admission_bytes": busiest[3][1] / busiest[3][2] if busiest[3][2] else None,
            "used_at_peak_line_bytes": peak[2],
            "final_bytes": final[2],
            "spent_tickets": final[4],
            "per_spent_ticket_bytes": spent_bytes / final[4] if final[4] else None,
            "max_bytes": max(m[2] for m in sim.memory),
        },
        "waits_for_plot": waits,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress simulate", description=__doc__)
    parser.add_argument("--students", type=int, default=2_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="admissions per second")
    parser.add_argument("--release-at", type=float, default=60.0, help="seconds in")
    parser.add_argument("--tail", type=float, default=600.0, help="arrival decay time, s")
    parser.add_argument("--until", type=float, default=3600.0, help="last arrival, s")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--redis",
        choices=("plain", "sentinel", "cluster"),
        default="plain",
        help="one server (default), a primary and replica behind three sentinels, or a "
        "three-primary cluster with replicas",
    )
    return parser


def settings_for(rate: float) -> Settings:
    key = secrets.token_urlsafe(24)
    return Settings(
        mode="test",
        secret_keys=(key,),
        backend_secret=(key,),
        rate=rate,
        # The cap must not bind before the rate: an admission counts for the window.
        max_active=max(500, math.ceil(rate * 60 * 1.5)),
    )


def main(scenario: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    times = arrivals.release(
        args.students,
        release_at_s=args.release_at,
        tail_s=args.tail,
        until_s=args.until,
        seed=args.seed,
    )
    sim = Simulation(settings_for(args.rate), times, progress=not args.quiet)
    with started(args.redis) as (url, _):
        run(sim, url)
    summary = summarise(sim)
    summary["redis"] = args.redis
    waits = summary.pop("waits_for_plot")
    markdown = markdown_of(summary)
    report.say(markdown)
    timeline = [
        {"t": t, "line": seq - f, **({"admitted": f - prev[2]} if prev else {})}
        for (t, seq, f, _), prev in zip(sim.seconds, [None, *sim.seconds[:-1]], strict=True)
    ]
    data = {**report.header(scenario, argv), "summary": summary, "timeline": timeline}
    folder = report.write(scenario, data, markdown)
    series = plots.Series("simulate", timeline, waits, args.rate, len(waits))
    pngs = plots.draw([series], folder, scenario, "Time from arrival to admission (CDF)")
    report.say(f"report: {folder} ({len(pngs)} plots)")
    fair = summary["fairness"]
    return 0 if not fair["joined_out_of_tick_order"] and not fair["frontier_moved_back"] else 1


def markdown_of(s: dict[str, Any]) -> str:
    m, e, p, w = s["memory"], s["eta"], s["pacer"], s["wait_s"]
    rows = [
        ["Redis", s.get("redis", "plain")],
        ["students", s["students"]],
        ["configured rate, admissions/s", s["rate"]],
        ["simulated time, s", s["simulated_s"]],
        ["wall time, s", s["wall_s"]],
        ["admitted at once on arrival", s["admitted_at_once"]],
        ["joined out of arrival order (pairs)", s["fairness"]["joined_out_of_tick_order"]],
        ["frontier moved back", s["fairness"]["frontier_moved_back"]],
        ["wait p50 / p90 / p99 / max, s", _slash(w, ("p50", "p90", "p99", "max"))],
        [
            "ETA error, abs(shown - had), p50 / p90 / p99, s",
            _slash(e["abs_error_s"], ("p50", "p90", "p99")),
        ],
        [
            "ETA error relative to the wait, p50 / p90 / p99, % (waits of 1 s or more)",
            _slash(e["relative_error_pct"], ("p50", "p90", "p99")),
        ],
        ["ETA signed mean error, s (+ = too long)", e["signed_mean_s"]],
        ["wait inside the shown range, %", e["within_range_pct"]],
        ["pacer: mean admitted/s with a backlog", p["mean_per_s"]],
        ["pacer: min / max in one second", f"{p['min_per_s']} / {p['max_per_s']}"],
        ["pacer: achieved / configured", p["ratio"]],
        ["longest line", m["peak_line"]],
        ["Redis used_memory, empty room, bytes", m["base_bytes"]],
        [
            "state, config and lease keys, empty / at the longest line, bytes",
            f"{m['line_keys_empty_bytes']:,} / {m['line_keys_at_peak_bytes']:,}",
        ],
        ["Redis memory per waiting student, bytes", m["per_waiting_student_bytes"]],
        ["most admissions in the active set at once", m["most_active"]],
        ["Redis memory per active admission (active set), bytes", m["per_active_admission_bytes"]],
        ["Redis used_memory at the longest line, bytes", m["used_at_peak_line_bytes"]],
        ["spent-ticket markers at the end (kept 12 h)", m["spent_tickets"]],
        ["Redis memory per spent ticket, bytes", m["per_spent_ticket_bytes"]],
        ["Redis used_memory at the end, bytes", m["final_bytes"]],
    ]
    return report.table(["figure", "value"], rows)


def _slash(d: dict[str, float], keys: tuple[str, ...]) -> str:
    return " / ".join(f"{d[k]:.1f}" for k in keys if k in d)
