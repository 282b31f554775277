"""Benchmark of the lookup backend: 2,000,000-row import, then lookups vs a plain route.

Run from the repository root::

    python -m stress.benches.lookup [--students N] [--duration S] [--granian]

In one run: generate the sample CSV (cached in stress/.cache/), time the import,
start the backend (Hypercorn, one worker; it reads the database into the page cache
at startup) pinned to core 0, and load it from a process pinned to core 1 -
alternating rounds of the plain route ``GET /healthz`` and real lookups
(``POST /api/result`` for random candidates with the admission header sent the way
the gateway sends it - re-signed every few seconds, ``AdmissionSigner.reusable`` -
every answer checked against the generator). Reported: median req/s of each kind
and the median of the per-round ratios (lookup round / plain round just before),
which compares like with like on a noisy machine. Prints a table; writes
stress/reports/*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from stress.benches.servers import start_backend
from stress.harness.loadgen import LoadResult, Request, http_request, json_post, run_in_process
from stress.harness.paths import CACHE, REPORTS
from stress.harness.processes import LOADER_CORE, SERVER_CORE, Processes, pinning_possible
from stress.harness.report import cpu_model
from waitroom.lookup import sample
from waitroom.lookup.importing.importer import import_csv
from waitroom.shared.admission import HEADER, AdmissionSigner
from waitroom.shared.processes import free_port

GOAL_RATIO = 0.7


def _sample_file(students: int, seed: int) -> tuple[Path, float | None]:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"candidates-{students}-seed{seed}.csv"
    if path.exists():
        return path, None
    started = time.perf_counter()
    sample.write_csv(path, students, seed)
    return path, time.perf_counter() - started


def _plain_factory() -> Request:
    raw = http_request("GET", "/healthz")
    ok = Request(raw, check=lambda status, body: status == 200 and body == b"ok")
    return ok


class _LookupFactory:
    """A random real candidate per request, the gateway's admission token, a checked answer."""

    def __init__(self, secret: str, students: int, seed: int) -> None:
        self.signer = AdmissionSigner([secret])
        self.students = students
        self.seed = seed
        self.rng = random.Random(seed)

    def __call__(self) -> Request:
        k = self.rng.randrange(self.students)
        sheet = sample.candidate(self.seed, k)
        token = self.signer.reusable("bench", "gw-bench")
        raw = json_post(
            "/api/result",
            {"roll": sheet.roll, "dob": sheet.dob.isoformat()},
            {HEADER: token},
        )
        expected = sheet.to_json()
        return Request(raw, check=lambda status, body: status == 200 and body == expected)


def _bench_server(server: str, db: Path, args: argparse.Namespace, secret: str) -> dict[str, Any]:
    port = free_port()
    pin = pinning_possible()
    cpu = LOADER_CORE if pin else None
    rounds: dict[str, list[LoadResult]] = {"plain": [], "lookup": []}
    with (
        tempfile.TemporaryDirectory(prefix="waitroom-lookup-bench-") as logs,
        Processes(Path(logs)) as procs,
    ):
        core = SERVER_CORE if pin else None
        pid = start_backend(procs, f"{server}-backend", server, port, db, secret, core)
        procs.wait_ready(pid, port, "/healthz")
        for _ in range(args.rounds):
            for name, factory in (
                ("plain", _plain_factory),
                ("lookup", _LookupFactory(secret, args.students, args.seed)),
            ):
                result = run_in_process(
                    "127.0.0.1",
                    port,
                    factory,
                    cpu=cpu,
                    connections=args.connections,
                    duration_s=args.duration,
                    warmup_s=1.0,
                )
                rounds[name].append(result)
                print(f"  {server:9} {name:6} {result.summary()}", flush=True)
    plain = statistics.median(r.rps for r in rounds["plain"])
    lookup = statistics.median(r.rps for r in rounds["lookup"])
    # Each lookup round is compared with the plain round just before it: on a noisy
    # shared machine the neighbours in time are the fairest comparison.
    ratios = [
        lk.rps / pl.rps for pl, lk in zip(rounds["plain"], rounds["lookup"], strict=True) if pl.rps
    ]
    return {
        "server": server,
        "plain_rps": plain,
        "lookup_rps": lookup,
        "ratio": statistics.median(ratios) if ratios else 0.0,
        "round_ratios": ratios,
        "all_ok": all(r.ok for rs in rounds.values() for r in rs),
        "loader_saturated": any(r.saturated for rs in rounds.values() for r in rs),
        "rounds": {k: [r.to_dict() for r in v] for k, v in rounds.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.benches.lookup", description=__doc__)
    parser.add_argument("--students", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=sample.DEFAULT_SEED)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--granian", action="store_true", help="also measure on granian")
    args = parser.parse_args(argv)

    csv_path, gen_s = _sample_file(args.students, args.seed)
    print(
        f"sample: {csv_path.name}"
        + (f" generated in {gen_s:.1f} s" if gen_s is not None else " (cached)"),
        flush=True,
    )
    db = CACHE / "bench.sqlite3"
    report = import_csv(csv_path, db)
    print(f"import: {report.rows} rows in {report.seconds:.1f} s", flush=True)

    secret = secrets.token_urlsafe(32)
    servers = ["hypercorn"] + (["granian"] if args.granian else [])
    results = [_bench_server(s, db, args, secret) for s in servers]

    print()
    print(f"{'server':10} {'plain req/s':>12} {'lookup req/s':>13} {'ratio':>6}  ok")
    for r in results:
        flag = " (loader saturated)" if r["loader_saturated"] else ""
        print(
            f"{r['server']:10} {r['plain_rps']:12.0f} {r['lookup_rps']:13.0f} "
            f"{r['ratio']:6.2f}  {'yes' if r['all_ok'] else 'NO'}{flag}"
        )
    print(f"import of {report.rows} rows: {report.seconds:.1f} s; goal ratio >= {GOAL_RATIO}")

    REPORTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = REPORTS / f"lookup-bench-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "processor": cpu_model(),
                },
                "command": "python -m stress.benches.lookup " + " ".join(argv or sys.argv[1:]),
                "sample_generation_s": gen_s,
                "import": {"rows": report.rows, "seconds": report.seconds},
                "servers": results,
            },
            indent=2,
        )
    )
    print(f"report: {out}")
    hypercorn = results[0]
    return 0 if hypercorn["all_ok"] and hypercorn["ratio"] >= GOAL_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
