"""The gateway bench's figures: one row per route and round, judged against the goals.

Each route's rows are averaged over the rounds into a :class:`Figure`; the goals
compare figures of the same run and server, ``(b)/(a)`` (a waiting student's
status check against the server's own yardstick) and ``(c)`` (a lookup through
the gateway against the backend alone), with each round's ratio beside the
mean to show how far the machine drifted within the run.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from stress.benches.measure import measure_load
from stress.harness.loadgen import LoadResult, RequestFactory
from stress.harness.processes import SERVER_CORE

GOAL_STATUS = 0.8
GOAL_LOOKUP = 0.7
# Share of the server's core used by others above which a figure is flagged.
FOREIGN_LIMIT = 0.1

ROUTES = {
    "plain": "(a) raw ASGI app, GET /",
    "status": "(b) GET /status, waiting ticket",
    "state": "GET /queue/state",
    "direct": "(c) backend direct, POST /api/result",
    "gateway": "(c) via gateway, POST /api/result",
}


@dataclass
class Row:
    server: str
    route: str
    round: int
    result: LoadResult
    # CPU share of one core per process under test, over the loader's run.
    server_cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Busy share of each core over the window, whoever used it.
    core_busy: dict[int, float] = field(default_factory=dict)
    foreign_on_server_core: float = 0.0

    @property
    def errors(self) -> int:
        r = self.result
        non_2xx = sum(n for status, n in r.statuses.items() if not 200 <= status < 300)
        return non_2xx + sum(r.errors.values()) + r.timeouts + r.check_failures

    def cpu_ms_per_request(self, name: str) -> float:
        rps = self.result.rps
        return self.server_cpu.get(name, 0.0) / rps * 1000 if rps else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "route": self.route,
            "round": self.round,
            "label": ROUTES[self.route],
            "rps": self.result.rps,
            "errors": self.errors,
            "server_cpu_share": self.server_cpu,
            "server_cpu_ms_per_request": {n: self.cpu_ms_per_request(n) for n in self.server_cpu},
            "core_busy": self.core_busy,
            "foreign_on_server_core": self.foreign_on_server_core,
            "notes": self.notes,
            "load": self.result.to_dict(),
        }


def measure(
    args: argparse.Namespace,
    server: str,
    route: str,
    round_: int,
    port: int,
    factory: RequestFactory,
    watched: dict[str, int],
) -> Row:
    result, window = measure_load(args, port, factory, watched)
    row = Row(server, route, round_, result, window.shares, list(result.notes))
    row.core_busy = window.core_busy
    row.foreign_on_server_core = foreign = window.foreign_on_server_core
    if foreign > FOREIGN_LIMIT:
        row.notes.append(
            f"other processes used {foreign:.0%} of core {SERVER_CORE} during this run: "
            "the server had less than a core, the figure is low"
        )
    lat = result.latency_ms
    print(
        f"  {server:9} {ROUTES[route]:38} {result.rps:8.0f} req/s  "
        f"p50 {lat['p50']:6.1f}  p99 {lat['p99']:6.1f} ms  errors {row.errors}  "
        f"status {result.statuses}  loader cpu {result.cpu_share:.0%}  "
        + "  ".join(f"{n} cpu {share:.0%}" for n, share in row.server_cpu.items()),
        flush=True,
    )
    for note in row.notes:
        print(f"    ! {note}", flush=True)
    return row


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


@dataclass
class Figure:
    """One route on one server, over all rounds."""

    server: str
    route: str
    rows: list[Row]

    @property
    def rps(self) -> float:
        return _mean([r.result.rps for r in self.rows])

    def latency(self, key: str) -> float:
        return _mean([r.result.latency_ms[key] for r in self.rows])

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rows)

    @property
    def loader_cpu(self) -> float:
        return max(r.result.cpu_share for r in self.rows)

    @property
    def saturated(self) -> bool:
        return any(r.result.saturated for r in self.rows)

    @property
    def contended(self) -> bool:
        return any(r.foreign_on_server_core > FOREIGN_LIMIT for r in self.rows)

    def cpu(self) -> dict[str, tuple[float, float]]:
        """Process -> (share of one core, CPU ms per request), averaged over rounds."""
        names = self.rows[0].server_cpu.keys()
        return {
            n: (
                _mean([r.server_cpu[n] for r in self.rows]),
                _mean([r.cpu_ms_per_request(n) for r in self.rows]),
            )
            for n in names
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "route": self.route,
            "label": ROUTES[self.route],
            "rps": self.rps,
            "rps_rounds": [r.result.rps for r in self.rows],
            "p50_ms": self.latency("p50"),
            "p99_ms": self.latency("p99"),
            "errors": self.errors,
            "loader_cpu_share": self.loader_cpu,
            "loader_saturated": self.saturated,
            "server_core_contended": self.contended,
            "server_cpu": {
                n: {"share": a, "ms_per_request": b} for n, (a, b) in self.cpu().items()
            },
        }


def figures_of(rows: list[Row]) -> list[Figure]:
    out: dict[tuple[str, str], Figure] = {}
    for r in rows:
        out.setdefault((r.server, r.route), Figure(r.server, r.route, [])).rows.append(r)
    return list(out.values())


def ratio(figures: list[Figure], server: str, top: str, bottom: str) -> dict[str, Any] | None:
    found = {f.route: f for f in figures if f.server == server}
    if top not in found or bottom not in found:
        return None
    per_round = [
        a.result.rps / b.result.rps
        for a, b in zip(found[top].rows, found[bottom].rows, strict=True)
        if b.result.rps
    ]
    return {
        "value": found[top].rps / found[bottom].rps if found[bottom].rps else 0.0,
        "rounds": per_round,
    }


def summarise(figures: list[Figure], servers: list[str]) -> list[dict[str, Any]]:
    out = []
    for server in servers:
        mine = [f for f in figures if f.server == server]
        status = ratio(figures, server, "status", "plain")
        lookup = ratio(figures, server, "gateway", "direct")
        out.append(
            {
                "server": server,
                "status_over_plain": status,
                "status_goal_met": bool(status and status["value"] >= GOAL_STATUS),
                "lookup_via_gateway_over_direct": lookup,
                "lookup_goal_met": bool(lookup and lookup["value"] >= GOAL_LOOKUP),
                "state_over_plain": ratio(figures, server, "state", "plain"),
                "loader_saturated_on": [f.route for f in mine if f.saturated],
                "server_core_contended_on": [f.route for f in mine if f.contended],
                "errors": sum(f.errors for f in mine),
            }
        )
    return out


def print_table(figures: list[Figure], summary: list[dict[str, Any]]) -> None:
    print()
    print("| server | route | req/s | p50 ms | p99 ms | errors | loader CPU | server CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for f in figures:
        floor = " (floor)" if f.saturated else ""
        cpu = ", ".join(
            f"{name} {share:.0%} ({ms:.2f} ms/req)" for name, (share, ms) in f.cpu().items()
        )
        print(
            f"| {f.server} | {ROUTES[f.route]} | {f.rps:,.0f}{floor} | {f.latency('p50'):.1f} "
            f"| {f.latency('p99'):.1f} | {f.errors} | {f.loader_cpu:.0%} | {cpu} |"
        )
    print()
    for s in summary:

        def show(ratio: dict[str, Any] | None, goal: float | None = None) -> str:
            if ratio is None:
                return "n/a"
            spread = "/".join(f"{r:.2f}" for r in ratio["rounds"])
            text = f"{ratio['value']:.2f} (rounds {spread})"
            if goal is None:
                return text
            return f"{text} {'PASS' if ratio['value'] >= goal else 'MISS'} (goal >= {goal})"

        print(f"{s['server']}: (b)/(a) = {show(s['status_over_plain'], GOAL_STATUS)}")
        print(
            f"{s['server']}: (c) via gateway / direct = "
            f"{show(s['lookup_via_gateway_over_direct'], GOAL_LOOKUP)}"
        )
        print(f"{s['server']}: /queue/state / (a) = {show(s['state_over_plain'])}")
        if s["loader_saturated_on"]:
            routes = ", ".join(s["loader_saturated_on"])
            print(
                f"  ! the load generator saturated its core on {routes}:"
                " those figures are floors, not the server's ceiling"
            )
        if s["server_core_contended_on"]:
            routes = ", ".join(s["server_core_contended_on"])
            print(
                f"  ! other processes shared core {SERVER_CORE} on {routes}:"
                " those figures are low; rerun on a quiet machine"
            )
