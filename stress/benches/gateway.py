"""Benchmark of the gateway: is waiting as cheap as the server allows, and forwarding cheap?

Run from the repository root::

    python -m stress.benches.gateway [--rounds R] [--duration S] [--servers hypercorn,granian]

For each server (Hypercorn, and granian when it is installed), in one run, measured
in interleaved rounds (a, b, state, c direct, c via gateway; again):

(a) ``stress.harness.plain_app`` (a raw ASGI app with a constant body) on that server: what
    the server itself can do on one core;
(b) ``GET /status`` of a waiting student with a valid ticket, and ``GET /queue/state``,
    on the gateway (``waitroom serve``): the lean layer, no Quart, no Redis;
(c) ``POST /api/result`` for random real candidates on the lookup backend directly,
    then through the gateway with an admission pass, every 16th answer compared
    byte for byte with the generator's marksheet.

Goals (from the issue): (b)/(a) >= 0.8 and (c) through / direct >= 0.7.

Each server under test runs one worker pinned to core 0; the load generator
(``stress.harness.loadgen``) runs pinned to core 1, as do this script and Redis, which are
idle while the load runs. Through the gateway, the backend has to share core 1 with
the loader: there are only two cores. Ratios compare figures of the same run,
because absolute figures move by 20-50 % between runs on this machine; the
per-round ratios show how much they moved within it.
Prints a table and writes stress/reports/gateway-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from stress.benches.gateway_figures import (
    GOAL_LOOKUP,
    GOAL_STATUS,
    Row,
    figures_of,
    measure,
    print_table,
    summarise,
)
from stress.benches.requests import CHECK_EVERY, Lookup, LookupFactory, constant, lookups_of
from stress.benches.servers import ROOM, installed, start_backend, start_gateway, start_yardstick
from stress.harness.cpu import QUIET, wait_quiet
from stress.harness.loadgen import RequestFactory
from stress.harness.paths import REPO, REPORTS
from stress.harness.plain_app import BODY as PLAIN_BODY
from stress.harness.probes import admission_pass, wait_status, waiting_ticket
from stress.harness.processes import LOADER_CORE, SERVER_CORE, Processes, pinned
from stress.harness.report import cpu_model
from stress.harness.stack import sample_db
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.line.keys import RoomKeys
from waitroom.line.store import SyncClient, connect_sync
from waitroom.lookup import sample
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.admission import AdmissionSigner
from waitroom.shared.processes import free_port


def _bench_server(
    args: argparse.Namespace,
    server: str,
    procs: Processes,
    store: SyncClient,
    redis_url: str,
    db: Path,
    lookups: list[Lookup],
) -> list[Row]:
    backend_secret = secrets.token_urlsafe(32)
    ports = {name: free_port() for name in ("plain", "direct", "backend", "gateway")}
    keys = RoomKeys(ROOM)
    store.flushall()
    # Everything is started at once and measured in interleaved rounds: an idle
    # server costs nothing, and a slow drift of this noisy machine then hits every
    # route alike instead of whichever happened to run last.
    pids = {
        "plain": start_yardstick(procs, server, ports["plain"], {}),
        "direct": start_backend(
            procs,
            f"{server}-backend-direct",
            server,
            ports["direct"],
            db,
            backend_secret,
            SERVER_CORE,
        ),
        # The gateway's backend must not take the gateway's core; the loader's is
        # the only other one.
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
            max_active="100000",
            # One pass serves every lookup of the run: each is still counted in
            # Redis (that cost is part of a real lookup), but the limit never stops it.
            pass_max_lookups=str(10**9),
        ),
    }
    rows: list[Row] = []
    try:
        for name, path in (
            ("plain", "/"),
            ("direct", "/healthz"),
            ("backend", "/healthz"),
            ("gateway", "/readyz"),
        ):
            procs.wait_ready(pids[name], ports[name], path)
        gateway = ports["gateway"]
        # First a pass, while the room admits at once ...
        pass_cookie = admission_pass(gateway)
        # ... then a ticket that stays waiting: paused (which zeroes the pacer's
        # credit) while it joins, then admitting far too slowly to reach it, so the
        # status check computes a real estimate like any waiting student's.
        store.hset(keys.config, "paused", "1")
        time.sleep(0.5)
        ticket = waiting_ticket(gateway)
        store.hset(keys.config, mapping={"rate": "0.0001", "paused": "0"})
        time.sleep(0.5)
        wait_status(
            gateway, ticket, lambda body: body["state"] == "waiting" and body["eta_s"] is not None
        )

        plan: list[tuple[str, int, RequestFactory, dict[str, int]]] = [
            (
                "plain",
                ports["plain"],
                constant("/", {}, lambda status, body: status == 200 and body == PLAIN_BODY),
                {"server": pids["plain"]},
            ),
            (
                "status",
                gateway,
                constant(
                    "/status",
                    {"Cookie": f"{TICKET_COOKIE}={ticket}"},
                    lambda status, body: status == 202 and b'"state":"waiting"' in body,
                ),
                {"gateway": pids["gateway"]},
            ),
            (
                "state",
                gateway,
                constant(
                    "/queue/state", {}, lambda status, body: status == 200 and b'"frontier"' in body
                ),
                {"gateway": pids["gateway"]},
            ),
            (
                "direct",
                ports["direct"],
                LookupFactory(lookups, signer=AdmissionSigner([backend_secret])),
                {"backend": pids["direct"]},
            ),
            (
                "gateway",
                gateway,
                LookupFactory(lookups, cookie=f"{PASS_COOKIE}={pass_cookie}"),
                {"gateway": pids["gateway"], "backend": pids["backend"]},
            ),
        ]
        for round_ in range(args.rounds):
            for route, port, factory, watched in plan:
                row = measure(args, server, route, round_, port, factory, watched)
                if route == "gateway":
                    row.notes.append("the backend shares core 1 with the load generator")
                rows.append(row)
    except Exception:
        for name in ("gateway", "backend"):
            print(f"--- {server}-{name} log ---", file=sys.stderr)
            print(procs.log_tail(f"{server}-{name}"), file=sys.stderr)
        raise
    finally:
        for pid in pids.values():
            procs.stop(pid)
    return rows


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the finally blocks stop every server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.benches.gateway", description=__doc__)
    parser.add_argument("--servers", default="hypercorn,granian", help="comma-separated")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="measured seconds per route and round"
    )
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all routes")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--students", type=int, default=100_000)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=30.0,
        help="seconds to wait at most for other processes to leave the cores idle",
    )
    args = parser.parse_args(argv)

    if not {SERVER_CORE, LOADER_CORE} <= os.sched_getaffinity(0):
        print("gateway_bench needs cores 0 and 1 (server and loader apart)", file=sys.stderr)
        return 2
    servers = installed(args.servers)

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    db = sample_db(args.students)
    lookups = lookups_of(sample.DEFAULT_SEED, args.students)
    busy = wait_quiet(args.wait_quiet)
    if busy >= QUIET:
        print(
            f"warning: the machine is busy ({busy:.0%} of a core used by other processes); "
            "figures will be low and noisy",
            flush=True,
        )
    rows: list[Row] = []
    # This script and Redis stay off the servers' core; they idle during the runs.
    with (
        pinned({LOADER_CORE}),
        tempfile.TemporaryDirectory(prefix="waitroom-bench-") as tmp,
        EmbeddedRedis() as redis_server,
    ):
        procs = Processes(Path(tmp))
        store = connect_sync(redis_server.url)
        try:
            for server in servers:
                print(f"{server}:", flush=True)
                rows += _bench_server(args, server, procs, store, redis_server.url, db, lookups)
        except KeyboardInterrupt:
            print("interrupted; servers stopped", file=sys.stderr)
            return 130
        finally:
            procs.stop_all()
            store.close()

    figures = figures_of(rows)
    summary = summarise(figures, servers)
    print_table(figures, summary)
    took = time.monotonic() - started
    REPORTS.mkdir(exist_ok=True)
    out = REPORTS / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": "python -m stress.benches.gateway "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "settings": {
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "students": args.students,
            "server_core": SERVER_CORE,
            "loader_core": LOADER_CORE,
            "answers_checked": f"1 in {CHECK_EVERY}",
        },
        "goals": {"status_over_plain": GOAL_STATUS, "lookup_via_gateway_over_direct": GOAL_LOOKUP},
        "machine_busy_before_run": busy,
        "summary": summary,
        "figures": [f.to_dict() for f in figures],
        "rounds": [r.to_dict() for r in rows],
        "took_s": took,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"\nreport: {out.relative_to(REPO)} ({took:.0f} s)")
    met = all(s["status_goal_met"] and s["lookup_goal_met"] and not s["errors"] for s in summary)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
