"""``door``: what the crowd's requests cost one gateway worker, against a raw ASGI app.

The waiting room must not fail at its own door: a student's every request should
cost about what the server itself costs. For each server (Hypercorn, granian), in
one run and in interleaved rounds, one worker pinned to core 0 answers, and the
load generator (``stress.harness.loadgen``) on core 1 asks:

- ``raw``: ``stress.harness.plain_app``, a raw ASGI app with a constant body: the yardstick;
- ``status``: ``GET /status`` of a waiting student (a valid ticket);
- ``json``: ``GET /`` of a waiting JSON client (a valid ticket);
- ``refresh``: ``GET /`` of a waiting browser, the progress page (a valid ticket);
- ``arrival``: ``GET /`` of a new arrival: a join and its page, each request
  another student's address in ``X-Forwarded-For`` (the stack trusts the loopback
  proxy), so the per-client join limit is checked as in production;
- ``exchange``: ``GET /`` of a JSON client whose ticket just reached the front: the
  ticket traded for a pass, once (each request another ticket, signed here with the
  gateway's key), and the request forwarded to the lookup backend, whose answer it
  gets (since the gateway fronts any origin, the front of the line is the site);
- ``first visit``: an arrival on a new connection (a TCP handshake each).

Redis and the lookup backend run on core 1 too, idle but for the joins and trades.
Goals (issue 10): arrival >= 0.5 x raw, refresh >= 0.8, json >= 0.8, status >= 0.9,
exchange >= 0.5. Ratios compare figures of one run: absolute figures move by 20-50 %
between runs on this machine.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stress.benches.measure import measure_load
from stress.benches.requests import constant
from stress.benches.servers import ROOM, installed, start_backend, start_gateway, start_yardstick
from stress.harness import report
from stress.harness.httpclient import client_address
from stress.harness.loadgen import Request, RequestFactory, http_request
from stress.harness.plain_app import BODY as PLAIN_BODY
from stress.harness.probes import admission_pass, waiting_ticket
from stress.harness.processes import HOST, LOADER_CORE, Processes, pinning_possible
from stress.harness.stack import sample_db
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.gateway.services import make_signer
from waitroom.line.keys import RoomKeys
from waitroom.line.store import SyncClient, connect_sync
from waitroom.room.tickets import TICKET_COOKIE
from waitroom.settings import Settings
from waitroom.shared.processes import free_port

GOALS = {"status": 0.9, "json": 0.8, "refresh": 0.8, "arrival": 0.5, "exchange": 0.5}
ROUTES = {
    "raw": "raw ASGI app (the yardstick)",
    "status": "GET /status, waiting",
    "json": "GET / JSON client, waiting",
    "refresh": "GET / HTML refresh, waiting",
    "arrival": "GET / new arrival (a join each)",
    "exchange": "GET / ticket-for-pass exchange",
    "first visit": "GET / new arrival, new connection",
}
# Tickets at the front signed ahead for the exchange: more than any run trades.
EXCHANGE_TICKETS = 400_000


def _says(ok: tuple[int, ...], needle: bytes) -> Callable[[int, bytes], bool]:
    return lambda status, body: status in ok and needle in body


def _arrivals(headers: dict[str, str]) -> RequestFactory:
    counter = itertools.count()

    def check(status: int, body: bytes) -> bool:
        return status in (200, 202) and b"data-position" in body

    def factory() -> Request:
        forwarded = {"X-Forwarded-For": client_address(next(counter))}
        return Request(http_request("GET", "/", headers={**headers, **forwarded}), check)

    return factory


def _exchanges(tokens: list[bytes]) -> RequestFactory:
    it = iter(tokens)
    prefix = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nCookie: "
    suffix = (TICKET_COOKIE + "=").encode()

    def check(status: int, body: bytes) -> bool:
        # The backend's own answer to an admitted JSON app, forwarded.
        return status == 200 and b'"admitted"' in body

    def factory() -> Request:
        return Request(prefix + suffix + next(it) + b"\r\n\r\n", check)

    return factory


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress door", description=__doc__)
    parser.add_argument("--servers", default="hypercorn,granian", help="comma-separated")
    parser.add_argument("--duration", type=float, default=2.5, help="measured seconds a round")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    return parser


def _bench(
    args: argparse.Namespace, server: str, procs: Processes, store: SyncClient, redis_url: str
) -> dict[str, list[dict[str, Any]]]:
    secret = secrets.token_urlsafe(32)
    backend_secret = secrets.token_urlsafe(32)
    ports = {name: free_port() for name in ("plain", "backend", "gateway")}
    store.flushall()
    db = sample_db(10_000)
    pids = {
        "plain": start_yardstick(procs, server, ports["plain"], {}),
        "backend": start_backend(
            procs, f"{server}-backend", server, ports["backend"], db, backend_secret, LOADER_CORE
        ),
        "gateway": start_gateway(
            procs,
            server,
            ports["gateway"],
            redis_url=redis_url,
            backend_port=ports["backend"],
            backend_secret=backend_secret,
            secret=secret,
            max_active="10000000",
            trusted_proxies=f"{HOST}/32",
        ),
    }
    results: dict[str, list[dict[str, Any]]] = {route: [] for route in ROUTES}
    try:
        for name, path in (("plain", "/"), ("backend", "/healthz"), ("gateway", "/readyz")):
            procs.wait_ready(pids[name], ports[name], path)
        gateway = ports["gateway"]
        # One admission while the room admits at once, so the frontier is past 1 ...
        admission_pass(gateway)
        # ... then a line that hardly moves, so every arrival waits with an estimate
        # (a pause first, which zeroes the pacer's credit).
        keys = RoomKeys(ROOM)
        store.hset(keys.config, "paused", "1")
        time.sleep(0.5)
        store.hset(keys.config, mapping={"rate": "0.0001", "paused": "0"})
        time.sleep(1.0)
        ticket = waiting_ticket(gateway)
        epoch = store.hget(keys.state, "epoch")
        settings = Settings(
            mode="test", secret_keys=(secret,), backend_secret=(backend_secret,), room=ROOM
        )
        signer = make_signer(settings)
        assert isinstance(epoch, bytes)
        ready = [
            signer.issue_ticket(1, epoch.decode(), 0)[1].encode() for _ in range(EXCHANGE_TICKETS)
        ]
        waiting = {"Cookie": f"{TICKET_COOKIE}={ticket}"}
        plan: list[tuple[str, int, RequestFactory]] = [
            ("raw", ports["plain"], constant("/", {}, _says((200,), PLAIN_BODY))),
            ("status", gateway, constant("/status", waiting, _says((202,), b'"waiting"'))),
            (
                "json",
                gateway,
                constant(
                    "/", {**waiting, "Accept": "application/json"}, _says((202,), b'"waiting"')
                ),
            ),
            (
                "refresh",
                gateway,
                constant("/", {**waiting, "Accept": "text/html"}, _says((200,), b"data-position")),
            ),
            ("arrival", gateway, _arrivals({"Accept": "text/html"})),
            ("exchange", gateway, _exchanges(ready)),
            ("first visit", gateway, _arrivals({"Accept": "text/html", "Connection": "close"})),
        ]
        offset = 0
        for round_ in range(args.rounds):
            for route, port, factory in plan:
                if route == "exchange":  # fresh tickets every round
                    factory = _exchanges(ready[offset:])
                watched = {"server": pids["plain" if route == "raw" else "gateway"]}
                result, window = measure_load(args, port, factory, watched)
                server_cpu = sum(window.shares.values())
                if route == "exchange":
                    offset += result.requests * 2 + 10_000  # warm-up included
                results[route].append({**result.to_dict(), "server_cpu": server_cpu})
                report.say(
                    f"  {server:9} round {round_ + 1} {ROUTES[route]:36} {result.summary()}"
                    f"  server cpu {server_cpu:.0%}"
                )
    finally:
        for pid in pids.values():
            procs.stop(pid)
    return results


def main(scenario: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not pinning_possible():
        report.say("door needs two cores (server and load generator apart)")
        return 2
    servers = installed(args.servers)
    all_results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rows: list[list[Any]] = []
    with tempfile.TemporaryDirectory(prefix="waitroom-door-") as logs:
        procs = Processes(Path(logs))
        store_server = EmbeddedRedis().start()
        os.sched_setaffinity(0, {LOADER_CORE})
        try:
            store = connect_sync(store_server.url)
            for server in servers:
                all_results[server] = _bench(args, server, procs, store, store_server.url)
        finally:
            procs.stop_all()
            store_server.close()
    for server, results in all_results.items():
        raws = [r["rps"] for r in results["raw"]]
        for route, rounds in results.items():
            rps = _mean([r["rps"] for r in rounds])
            # Each round's figure against the yardstick of the same round, then the
            # median: this machine drifts by 20-50 % within a run, and a drift then
            # weighs on both sides of a ratio alike.
            ratio = statistics.median(
                r["rps"] / raw for r, raw in zip(rounds, raws, strict=True) if raw
            )
            goal = GOALS.get(route)
            verdict = "" if goal is None else ("met" if ratio >= goal else "MISSED")
            rows.append(
                [
                    server,
                    ROUTES[route],
                    rps,
                    " / ".join(f"{r['rps']:,.0f}" for r in rounds),
                    f"{ratio:.2f}",
                    f"{goal:.1f} {verdict}" if goal else "",
                    f"{_mean([r['latency_ms']['p50'] for r in rounds]):.1f}",
                    sum(
                        sum(r["errors"].values()) + r["timeouts"] + r["check_failures"]
                        for r in rounds
                    ),
                    f"{max(r['cpu_share'] for r in rounds):.0%}",
                ]
            )
    markdown = report.table(
        [
            "server",
            "request",
            "req/s",
            "rounds",
            "x raw (median of rounds)",
            "goal",
            "p50 ms",
            "errors + bad answers",
            "loader CPU",
        ],
        rows,
    )
    report.say()
    report.say(markdown)
    data = {**report.header(scenario, argv), "results": all_results}
    folder = report.write(scenario, data, markdown)
    report.say(f"report: {folder}")
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0
