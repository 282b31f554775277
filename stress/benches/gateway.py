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
import contextlib
import http.client
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from types import FrameType
from typing import Any

from stress.harness.loadgen import LoadResult, Request, RequestFactory, http_request, run_in_process
from stress.harness.paths import CACHE, REPO, REPORTS
from stress.harness.plain_app import BODY as PLAIN_BODY
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.line.keys import RoomKeys
from waitroom.line.store import SyncClient, connect_sync
from waitroom.lookup import sample
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.admission import HEADER, AdmissionSigner
from waitroom.shared.processes import stop_group

HOST = "127.0.0.1"
SERVER_CORE = 0
LOADER_CORE = 1
ROOM = "results"
GOAL_STATUS = 0.8
GOAL_LOOKUP = 0.7
# Checking every answer would spend loader CPU on the very thing being measured.
CHECK_EVERY = 16
# Precomputed candidates: generating one per request would load the loader too.
POOL = 4096
JSON_ACCEPT = {"Accept": "application/json"}
# Busy share of a core below which the machine counts as quiet before a run.
QUIET = 0.15
# Share of the server's core used by others above which a figure is flagged.
FOREIGN_LIMIT = 0.1

ROUTES = {
    "plain": "(a) raw ASGI app, GET /",
    "status": "(b) GET /status, waiting ticket",
    "state": "GET /queue/state",
    "direct": "(c) backend direct, POST /api/result",
    "gateway": "(c) via gateway, POST /api/result",
}


# -- processes -----------------------------------------------------------------------


class Processes:
    """Every server this run starts, so that each is stopped whatever happens."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], core: int, env: dict[str, str]) -> int:
        """Start ``python <args>`` pinned to ``core``; returns its pid."""
        log = (self.logdir / f"{name}.log").open("ab")
        try:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                # Pinned before exec, so every worker process and thread it starts
                # (granian's and Hypercorn's workers) inherits the core.
                preexec_fn=lambda: os.sched_setaffinity(0, {core}),
                # Its own process group: stopping it reaches the workers it spawned.
                start_new_session=True,
            )
        finally:
            log.close()
        self.running.append((name, proc))
        return proc.pid

    def check_alive(self, pid: int) -> None:
        for name, proc in self.running:
            if proc.pid == pid and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")

    def log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.logdir / f"{name}.log").read_text(errors="replace")[-1500:]
        return "(no log)"

    def stop(self, pid: int) -> None:
        for entry in list(self.running):
            proc = entry[1]
            if proc.pid != pid:
                continue
            self.running.remove(entry)
            stop_group(proc, grace_s=8)

    def stop_all(self) -> None:
        for _, proc in list(self.running):
            self.stop(proc.pid)


def start_yardstick(procs: Processes, server: str, port: int, env: dict[str, str]) -> int:
    """``stress.harness.plain_app`` on ``server`` through waitroom's own server runner (so with
    the gateway's server settings), pinned to the server core; its pid."""
    code = (
        "from waitroom.shared.server import run; "
        f"run('stress.harness.plain_app:app', host={HOST!r}, port={port}, server={server!r})"
    )
    return procs.start(f"{server}-plain", ["-c", code], SERVER_CORE, env)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_ready(procs: Processes, pid: int, port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check_alive(pid)
        with contextlib.suppress(OSError):
            status, _, _ = _get(port, path)
            if status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"http://{HOST}:{port}{path} not ready within {timeout:.0f} s")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{current}/stat").read_text()
            # Fields after the parenthesised command name; utime and stime are 14, 15.
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return total


def _core_jiffies() -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks per core since boot, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            # user nice system idle iowait irq softirq steal: idle and iowait are not busy
            ticks = [int(v) for v in values[:8]]
            out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


class CpuWindow(threading.Thread):
    """CPU shares (of one core) of the servers under test and of each core, over a window.

    The share of the server core that the watched processes do not account for is
    someone else's: another benchmark on this machine makes every figure low.
    """

    def __init__(self, watched: dict[str, int], start_after_s: float, length_s: float) -> None:
        super().__init__(daemon=True)
        self.watched = watched
        self.start_after_s = start_after_s
        self.length_s = length_s
        self.shares: dict[str, float] = {}
        self.core_busy: dict[int, float] = {}
        self.foreign_on_server_core = 0.0

    def run(self) -> None:
        time.sleep(self.start_after_s)
        cpu0 = {name: _tree_cpu_s(pid) for name, pid in self.watched.items()}
        cores0 = _core_jiffies()
        started = time.perf_counter()
        time.sleep(self.length_s)
        cpu1 = {name: _tree_cpu_s(pid) for name, pid in self.watched.items()}
        cores1 = _core_jiffies()
        wall = time.perf_counter() - started
        self.shares = {name: (cpu1[name] - cpu0[name]) / wall for name in self.watched}
        for core, (busy, total) in cores1.items():
            busy0, total0 = cores0.get(core, (busy, total))
            self.core_busy[core] = (busy - busy0) / max(1, total - total0)
        on_server_core = sum(
            share
            for name, share in self.shares.items()
            if _core_of(self.watched[name]) == SERVER_CORE
        )
        self.foreign_on_server_core = max(
            0.0, self.core_busy.get(SERVER_CORE, 0.0) - on_server_core
        )


def _core_of(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        cores = os.sched_getaffinity(pid)
        if len(cores) == 1:
            return next(iter(cores))
    return None


def _wait_quiet(limit_s: float) -> float:
    """Wait (up to ``limit_s``) for both cores to idle; returns the last busy share seen.

    Another benchmark running at the same time takes half a core from the server
    under test and halves its figures.
    """
    deadline = time.monotonic() + limit_s
    quiet_in_a_row = 0
    busiest = 1.0
    while True:
        before = _core_jiffies()
        time.sleep(1.0)
        after = _core_jiffies()
        busiest = max(
            (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after
        )
        quiet_in_a_row = quiet_in_a_row + 1 if busiest < QUIET else 0
        if quiet_in_a_row >= 2 or time.monotonic() >= deadline:
            return busiest


# -- HTTP set-up requests (a handful, so the standard library will do) --------------


def _get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, SimpleCookie]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        cookies: SimpleCookie = SimpleCookie()
        for value in response.headers.get_all("Set-Cookie") or []:
            cookies.load(value)
        return response.status, body, cookies
    finally:
        conn.close()


def _waiting_ticket(port: int) -> str:
    status, body, cookies = _get(port, "/", JSON_ACCEPT)
    if status != 202 or TICKET_COOKIE not in cookies:
        raise RuntimeError(f"expected a waiting ticket, got {status}: {body[:200]!r}")
    return cookies[TICKET_COOKIE].value


def _admission_pass(port: int, timeout: float = 10) -> str:
    """Join as a new student until admitted (the pacer mints credit within a tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, cookies = _get(port, "/", JSON_ACCEPT)
        if status == 200 and PASS_COOKIE in cookies:
            return cookies[PASS_COOKIE].value
        time.sleep(0.1)
    raise RuntimeError(f"no admission pass within {timeout:.0f} s (last {status}: {body[:200]!r})")


def _wait_status(port: int, ticket: str, ok: Callable[[dict[str, Any]], bool]) -> None:
    """Until the gateway's cached view (refreshed 4 times a second) shows what we set."""
    cookie = {"Cookie": f"{TICKET_COOKIE}={ticket}"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, body, _ = _get(port, "/status", cookie)
        if status in (200, 202) and ok(json.loads(body)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"gateway status never matched: {status} {body[:200]!r}")


# -- request factories (run in the forked loader) -----------------------------------


def _every(request: Request, checked: Request) -> RequestFactory:
    counter = iter(range(1 << 62))

    def factory() -> Request:
        return checked if next(counter) % CHECK_EVERY == 0 else request

    return factory


def _constant(
    path: str, headers: dict[str, str], check: Callable[[int, bytes], bool]
) -> RequestFactory:
    raw = http_request("GET", path, headers=headers)
    return _every(Request(raw), Request(raw, check))


@dataclass(frozen=True)
class Lookup:
    body: bytes
    expected: bytes


def _lookups(seed: int, students: int) -> list[Lookup]:
    rng = random.Random(seed ^ 0x5EED)
    out = []
    for k in rng.sample(range(students), min(POOL, students)):
        sheet = sample.candidate(seed, k)
        body = json.dumps({"roll": sheet.roll, "dob": sheet.dob.isoformat()}).encode()
        out.append(Lookup(body, sheet.to_json()))
    return out


class LookupFactory:
    """POST /api/result for a random candidate, with a pass cookie or an admission header.

    The direct requests carry an admission token re-signed once a second, which is
    what the gateway sends for one pass (itsdangerous stamps whole seconds): the
    backend does the same verification work on both paths.
    """

    def __init__(
        self, lookups: list[Lookup], *, cookie: str = "", signer: AdmissionSigner | None = None
    ) -> None:
        self.lookups = lookups
        self.cookie = cookie
        self.signer = signer
        self.rng = random.Random(1)
        self.count = 0
        self.second = -1
        self.token = ""

    def __call__(self) -> Request:
        item = self.lookups[self.rng.randrange(len(self.lookups))]
        headers = {"Content-Type": "application/json"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        if self.signer is not None:
            now = int(time.time())
            if now != self.second:
                self.second, self.token = now, self.signer.sign(ROOM, "bench-pass")
            headers[HEADER] = self.token
        raw = http_request("POST", "/api/result", headers=headers, body=item.body)
        self.count += 1
        if self.count % CHECK_EVERY:
            return Request(raw)
        expected = item.expected
        return Request(raw, lambda status, body: status == 200 and body == expected)


# -- measuring -------------------------------------------------------------------------


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


def measure_load(
    args: argparse.Namespace, port: int, factory: RequestFactory, watched: dict[str, int]
) -> tuple[LoadResult, CpuWindow]:
    """One run of the load generator on core 1 (``args``: connections, duration,
    warmup) and the CPU the ``watched`` processes used meanwhile."""
    # Sampled inside the loader's measured window (after its warm-up, before its
    # end), so start-up and tear-down do not dilute the shares.
    window = CpuWindow(watched, args.warmup + 0.3, max(0.5, args.duration - 0.6))
    window.start()
    result = run_in_process(
        HOST,
        port,
        factory,
        cpu=LOADER_CORE,
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    window.join()
    return result, window


def _measure(
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


def _bench_server(
    args: argparse.Namespace,
    server: str,
    procs: Processes,
    store: SyncClient,
    redis_url: str,
    db: Path,
    lookups: list[Lookup],
) -> list[Row]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    backend_secret = secrets.token_urlsafe(32)
    backend_env = {**env, "WAITROOM_BACKEND_SECRET": backend_secret}
    ports = {name: _free_port() for name in ("plain", "direct", "backend", "gateway")}

    def backend_args(port: int) -> list[str]:
        return [
            *("-m", "waitroom", "lookup", "serve", "--db", str(db), "--host", HOST),
            *("--port", str(port), "--server", server),
        ]

    keys = RoomKeys(ROOM)
    store.flushall()
    # Everything is started at once and measured in interleaved rounds: an idle
    # server costs nothing, and a slow drift of this noisy machine then hits every
    # route alike instead of whichever happened to run last.
    pids = {
        "plain": start_yardstick(procs, server, ports["plain"], env),
        "direct": procs.start(
            f"{server}-backend-direct", backend_args(ports["direct"]), SERVER_CORE, backend_env
        ),
        # The gateway's backend must not take the gateway's core; the loader's is
        # the only other one.
        "backend": procs.start(
            f"{server}-backend", backend_args(ports["backend"]), LOADER_CORE, backend_env
        ),
        "gateway": procs.start(
            f"{server}-gateway",
            [
                *("-m", "waitroom", "serve", "--server", server, "--workers", "1"),
                *("--host", HOST, "--port", str(ports["gateway"])),
            ],
            SERVER_CORE,
            {
                **env,
                "WAITROOM_MODE": "test",
                "WAITROOM_SECRET_KEYS": secrets.token_urlsafe(32),
                "WAITROOM_BACKEND_SECRET": backend_secret,
                "WAITROOM_REDIS_URL": redis_url,
                "WAITROOM_BACKEND_URL": f"http://{HOST}:{ports['backend']}",
                "WAITROOM_ROOM": ROOM,
                "WAITROOM_RATE": "1000",
                "WAITROOM_MAX_ACTIVE": "100000",
                # One pass serves every lookup of the run: each is still counted in
                # Redis (that cost is part of a real lookup), but the limit never stops it.
                "WAITROOM_PASS_MAX_LOOKUPS": str(10**9),
            },
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
            _wait_ready(procs, pids[name], ports[name], path)
        gateway = ports["gateway"]
        # First a pass, while the room admits at once ...
        pass_cookie = _admission_pass(gateway)
        # ... then a ticket that stays waiting: paused (which zeroes the pacer's
        # credit) while it joins, then admitting far too slowly to reach it, so the
        # status check computes a real estimate like any waiting student's.
        store.hset(keys.config, "paused", "1")
        time.sleep(0.5)
        ticket = _waiting_ticket(gateway)
        store.hset(keys.config, mapping={"rate": "0.0001", "paused": "0"})
        time.sleep(0.5)
        _wait_status(
            gateway, ticket, lambda body: body["state"] == "waiting" and body["eta_s"] is not None
        )

        plan: list[tuple[str, int, RequestFactory, dict[str, int]]] = [
            (
                "plain",
                ports["plain"],
                _constant("/", {}, lambda status, body: status == 200 and body == PLAIN_BODY),
                {"server": pids["plain"]},
            ),
            (
                "status",
                gateway,
                _constant(
                    "/status",
                    {"Cookie": f"{TICKET_COOKIE}={ticket}"},
                    lambda status, body: status == 202 and b'"state":"waiting"' in body,
                ),
                {"gateway": pids["gateway"]},
            ),
            (
                "state",
                gateway,
                _constant(
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
                row = _measure(args, server, route, round_, port, factory, watched)
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


# -- the run -------------------------------------------------------------------------


def _prepare_db(students: int) -> Path:
    """The sample results database, built once through the real CLI and cached."""
    CACHE.mkdir(exist_ok=True)
    db = CACHE / f"gateway-results-{students}.sqlite3"
    if db.exists():
        print(f"results: {db.relative_to(REPO)} (cached)", flush=True)
        return db
    csv_path = CACHE / f"gateway-sample-{students}.csv"
    started = time.perf_counter()
    for args in (
        ["sample", "--students", str(students), "--out", str(csv_path)],
        ["import", str(csv_path), "--db", str(db)],
    ):
        subprocess.run(
            [sys.executable, "-m", "waitroom", "lookup", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            cwd=REPO,
        )
    print(f"results: {students:,} candidates in {time.perf_counter() - started:.1f} s", flush=True)
    return db


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


def _figures(rows: list[Row]) -> list[Figure]:
    out: dict[tuple[str, str], Figure] = {}
    for r in rows:
        out.setdefault((r.server, r.route), Figure(r.server, r.route, [])).rows.append(r)
    return list(out.values())


def _ratio(figures: list[Figure], server: str, top: str, bottom: str) -> dict[str, Any] | None:
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


def _summarise(figures: list[Figure], servers: list[str]) -> list[dict[str, Any]]:
    out = []
    for server in servers:
        mine = [f for f in figures if f.server == server]
        status = _ratio(figures, server, "status", "plain")
        lookup = _ratio(figures, server, "gateway", "direct")
        out.append(
            {
                "server": server,
                "status_over_plain": status,
                "status_goal_met": bool(status and status["value"] >= GOAL_STATUS),
                "lookup_via_gateway_over_direct": lookup,
                "lookup_goal_met": bool(lookup and lookup["value"] >= GOAL_LOOKUP),
                "state_over_plain": _ratio(figures, server, "state", "plain"),
                "loader_saturated_on": [f.route for f in mine if f.saturated],
                "server_core_contended_on": [f.route for f in mine if f.contended],
                "errors": sum(f.errors for f in mine),
            }
        )
    return out


def _print_table(figures: list[Figure], summary: list[dict[str, Any]]) -> None:
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


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # so the finally blocks stop every server


@contextlib.contextmanager
def _pinned(core: int) -> Iterator[None]:
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


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
    servers = []
    for server in args.servers.split(","):
        if server == "granian" and not _importable("granian"):
            print("note: granian is not installed, skipped (pip install 'waitroom[granian]')")
        else:
            servers.append(server)

    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    db = _prepare_db(args.students)
    lookups = _lookups(sample.DEFAULT_SEED, args.students)
    busy = _wait_quiet(args.wait_quiet)
    if busy >= QUIET:
        print(
            f"warning: the machine is busy ({busy:.0%} of a core used by other processes); "
            "figures will be low and noisy",
            flush=True,
        )
    rows: list[Row] = []
    # This script and Redis stay off the servers' core; they idle during the runs.
    with (
        _pinned(LOADER_CORE),
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

    figures = _figures(rows)
    summary = _summarise(figures, servers)
    _print_table(figures, summary)
    took = time.monotonic() - started
    REPORTS.mkdir(exist_ok=True)
    out = REPORTS / f"gateway-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": _cpu_model(),
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


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


if __name__ == "__main__":
    sys.exit(main())
