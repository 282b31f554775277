"""``door``: how many arrivals a second one gateway worker lets in, and what else it serves.

The crowd scenarios found the limit of the waiting room at its own door: a new
arrival's ``GET /`` joins the line through Quart and renders a page. This measures
that cost alone, next to the requests a waiting crowd repeats: one gateway worker
(Hypercorn) pinned to core 0 with Redis and the backend idle beside it, the load
generator (``stress.loadgen``, 64 connections) on core 1, interleaved rounds of

- a browser's first visit: ``GET /`` for HTML on a new connection (``Connection:
  close``), so every request is a TCP handshake and a join and a page;
- the same on a kept-alive connection (a join and a page);
- a JSON client's join (``Accept: application/json``) on a kept-alive connection;
- ``GET /queue/state``, the far-from-the-front poll.

Every request names another student's address in ``X-Forwarded-For`` (the stack
trusts the loopback proxy), so the per-client join limit is checked, as in
production, and never refuses.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from stress import report
from stress.httpclient import client_address
from stress.loadgen import LoadResult, Request, RequestFactory, http_request, run_in_process
from stress.stack import Stack, pinning_possible, sample_db

VARIANTS = {
    "first visit, HTML, new connection": ("/", {"Accept": "text/html", "Connection": "close"}),
    "join, HTML, kept-alive connection": ("/", {"Accept": "text/html"}),
    "join, JSON, kept-alive connection": ("/", {"Accept": "application/json"}),
    "GET /queue/state": ("/queue/state", {"Accept": "application/json"}),
}


def _factory(path: str, headers: dict[str, str]) -> RequestFactory:
    """Each request from another student's address (the per-client join limit)."""
    counter = itertools.count()

    def check(status: int, body: bytes) -> bool:
        return status in (200, 202)

    def factory() -> Request:
        forwarded = {"X-Forwarded-For": client_address(next(counter))}
        return Request(http_request("GET", path, headers={**headers, **forwarded}), check)

    return factory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress door", description=__doc__)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rate", type=float, default=200.0, help="admissions per second")
    return parser


def main(scenario: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not pinning_possible():
        report.say("door needs two cores (gateway and load generator apart)")
        return 2
    results: dict[str, list[LoadResult]] = {name: [] for name in VARIANTS}
    with Stack(sample_db(100_000), waitroom=True, rate=args.rate, pin=True) as target:
        for round_ in range(args.rounds):
            for name, (path, headers) in VARIANTS.items():
                r = run_in_process(
                    target.host,
                    target.port,
                    _factory(path, headers),
                    cpu=1,
                    connections=args.connections,
                    duration_s=args.duration,
                    warmup_s=1.0,
                )
                results[name].append(r)
                report.say(f"  round {round_ + 1} {name:36} {r.summary()}")
    rows: list[list[Any]] = []
    for name, rounds in results.items():
        rps = [r.rps for r in rounds]
        rows.append(
            [
                name,
                sum(rps) / len(rps),
                " / ".join(f"{x:,.0f}" for x in rps),
                sum(r.latency_ms["p50"] for r in rounds) / len(rounds),
                sum(sum(r.errors.values()) + r.timeouts + r.check_failures for r in rounds),
                f"{max(r.cpu_share for r in rounds):.0%}",
            ]
        )
    markdown = report.table(
        ["request", "req/s", "rounds", "p50 ms", "errors + bad answers", "generator CPU"], rows
    )
    report.say()
    report.say(markdown)
    data = {
        **report.header(scenario, argv),
        "results": {name: [r.to_dict() for r in rounds] for name, rounds in results.items()},
    }
    folder = report.write(scenario, data, markdown)
    report.say(f"report: {folder}")
    return 0
