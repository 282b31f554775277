"""``baseline``: plaintext throughput of the server stacks, and of the load generator.

The seed document's framework comparison, redone so that a result can be trusted:
the shipped stack (Quart on Hypercorn, one worker and one per core) against a raw
ASGI app on the same server (``stress.harness.plain_app``), and both on uvicorn and
granian where installed. One worker runs pinned to core 0, the generator to core 1
(N workers get every core and share them with the generator: the table says so).
The generator is ``wrk`` when installed, else ``stress.harness.loadgen``; its own ceiling
is measured first, against the fastest server here, and any figure it reached with
its core saturated is marked as a floor, not the server's limit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from stress.harness import report
from stress.harness.loadgen import Request, http_request, run_in_process
from stress.harness.processes import HOST, LOADER_CORE, SERVER_CORE, Processes
from waitroom.shared.processes import free_port

SATURATED = 0.9
APPS = {"raw": "stress.harness.plain_app:app", "quart": "stress.harness.plain_app:quart_app"}


@dataclass
class Result:
    label: str
    app: str
    server: str
    workers: int
    generator: str
    rps: list[float]
    p50_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    generator_cpu: float  # share of one core, highest of the rounds

    @property
    def mean_rps(self) -> float:
        return sum(self.rps) / len(self.rps) if self.rps else 0.0

    @property
    def floor(self) -> bool:
        return self.generator_cpu >= SATURATED


# -- serving (run in the server process) ---------------------------------------------


def serve(app: str, server: str, workers: int, port: int) -> None:
    target = APPS[app]
    factory = app == "quart"
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            target,
            host=HOST,
            port=port,
            workers=workers,
            factory=factory,
            backlog=2048,
            log_level="warning",
            access_log=False,
        )
        return
    from waitroom.shared.server import run

    run(target, host=HOST, port=port, workers=workers, server=server, factory=factory)


# -- measuring ------------------------------------------------------------------------


def _start(procs: Processes, app: str, server: str, workers: int, port: int) -> None:
    """``app`` on ``server`` in a child (one worker pinned to the server core)."""
    procs.start(
        f"{app}-{server}-{workers}",
        ["-m", "stress.scenarios.baseline", "--serve", app, server, str(workers), str(port)],
        dict(os.environ),
        SERVER_CORE if workers == 1 else None,
    )
    procs.wait_ready(None, port, "/")


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_LAT = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50 and p99 in ms, errors and non-2xx answers from ``wrk --latency``."""
    found = _WRK_RPS.search(text)
    if found is None:
        raise ValueError(f"no Requests/sec in wrk output: {text[-500:]!r}")
    out = {"rps": float(found.group(1)), "errors": 0.0, "non_2xx": 0.0}
    for q, value, unit in _WRK_LAT.findall(text):
        out[f"p{q}_ms"] = float(value) * _UNIT_MS[unit]
    if m := _WRK_ERRORS.search(text):
        out["errors"] = float(sum(int(g) for g in m.groups()))
    if m := _WRK_NON2XX.search(text):
        out["non_2xx"] = float(m.group(1))
    return out


def _wrk(port: int, connections: int, duration: float) -> dict[str, float]:
    def prepare() -> None:
        os.sched_setaffinity(0, {LOADER_CORE})

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    done = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            f"http://{HOST}:{port}/",
        ],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=prepare,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    figures = parse_wrk(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    figures["cpu"] = cpu / wall
    return figures


def _loadgen(port: int, connections: int, duration: float) -> dict[str, float]:
    raw = http_request("GET", "/")

    def factory() -> Request:
        return Request(raw)

    r = run_in_process(
        HOST, port, factory, cpu=LOADER_CORE, connections=connections, duration_s=duration
    )
    non_2xx = sum(n for status, n in r.statuses.items() if not 200 <= status < 300)
    return {
        "rps": r.rps,
        "p50_ms": r.latency_ms["p50"],
        "p99_ms": r.latency_ms["p99"],
        "errors": float(sum(r.errors.values()) + r.timeouts),
        "non_2xx": float(non_2xx),
        "cpu": r.cpu_share,
    }


def measure(
    plan: list[tuple[str, str, int]], generator: str, args: argparse.Namespace
) -> list[Result]:
    """Every stack of ``plan`` in interleaved rounds: a, b, c, then a, b, c again.

    All servers are started first and idle while another is measured, so one slow
    spell of this shared machine lowers one round of each, not all rounds of one.
    """
    load = _wrk if generator == "wrk" else _loadgen
    ports: list[int] = []
    rounds: list[list[dict[str, float]]] = [[] for _ in plan]
    with (
        tempfile.TemporaryDirectory(prefix="waitroom-baseline-") as logs,
        Processes(Path(logs)) as procs,
    ):
        for app, server, workers in plan:
            ports.append(free_port())
            _start(procs, app, server, workers, ports[-1])
            load(ports[-1], args.connections, 1.0)  # warm-up, not counted
        for round_ in range(args.rounds):
            report.say(f"  round {round_ + 1} of {args.rounds}")
            for i, port in enumerate(ports):
                rounds[i].append(load(port, args.connections, args.duration))
    results = []
    for (app, server, workers), figures in zip(plan, rounds, strict=True):
        label = f"{'Quart' if app == 'quart' else 'raw ASGI'} on {server}, {workers} worker(s)"
        result = Result(
            label=label,
            app=app,
            server=server,
            workers=workers,
            generator=generator,
            rps=[r["rps"] for r in figures],
            p50_ms=sum(r.get("p50_ms", 0.0) for r in figures) / len(figures),
            p99_ms=sum(r.get("p99_ms", 0.0) for r in figures) / len(figures),
            errors=int(sum(r["errors"] for r in figures)),
            non_2xx=int(sum(r["non_2xx"] for r in figures)),
            generator_cpu=max(r["cpu"] for r in figures),
        )
        floor = " (generator saturated: a floor)" if result.floor else ""
        report.say(
            f"  {label:40} {result.mean_rps:10,.0f} req/s  p50 {result.p50_ms:.1f} ms  "
            f"generator cpu {result.generator_cpu:.0%}{floor}"
        )
        results.append(result)
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress baseline", description=__doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--generator", choices=("auto", "wrk", "loadgen"), default="auto")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="the N")
    return parser


def main(scenario: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not {SERVER_CORE, LOADER_CORE} <= os.sched_getaffinity(0):
        report.say("baseline needs cores 0 and 1 (server and generator apart)")
        return 2
    generator = args.generator
    if generator == "auto":
        generator = "wrk" if shutil.which("wrk") else "loadgen"
    servers = ["hypercorn"] + [s for s in ("uvicorn", "granian") if importlib.util.find_spec(s)]
    report.say(f"generator: {generator}; servers: {', '.join(servers)}")
    fastest = "granian" if "granian" in servers else servers[-1]
    report.say("the generator's ceiling:")
    (ceiling,) = measure([("raw", fastest, 1)], generator, args)
    plan = [("quart", "hypercorn", 1), ("raw", "hypercorn", 1)]
    plan += [("quart", "hypercorn", args.workers), ("raw", "hypercorn", args.workers)]
    plan += [(app, s, 1) for s in servers[1:] for app in ("quart", "raw")]
    report.say("servers:")
    results = measure(plan, generator, args)
    markdown = markdown_of(results, ceiling, generator, args)
    report.say()
    report.say(markdown)
    data = {
        **report.header(scenario, argv),
        "generator": generator,
        "ceiling": {**asdict(ceiling), "mean_rps": ceiling.mean_rps},
        "results": [{**asdict(r), "mean_rps": r.mean_rps, "floor": r.floor} for r in results],
    }
    folder = report.write(scenario, data, markdown)
    report.say(f"report: {folder}")
    return 0


def markdown_of(
    results: list[Result], ceiling: Result, generator: str, args: argparse.Namespace
) -> str:
    base = next((r.mean_rps for r in results if r.app == "raw" and r.server == "hypercorn"), 0.0)
    rows: list[list[Any]] = []
    for r in results:
        rows.append(
            [
                r.label,
                f"{r.mean_rps:,.0f}" + (" (floor)" if r.floor else ""),
                " / ".join(f"{x:,.0f}" for x in r.rps),
                r.mean_rps / base if base else None,
                r.p50_ms,
                r.p99_ms,
                r.errors + r.non_2xx,
                f"{r.generator_cpu:.0%}",
            ]
        )
    cpu = ceiling.generator_cpu
    # A generator that was not saturated could have done more: extrapolate its CPU.
    estimate = ceiling.mean_rps / cpu if cpu else 0.0
    lines = [
        f"Generator: `{generator}`, one thread pinned to core {LOADER_CORE}, "
        f"{args.connections} keep-alive connections, {args.rounds} interleaved rounds of "
        f"{args.duration:g} s (the figure is their mean); one-worker servers pinned to "
        f"core {SERVER_CORE}, "
        f"{args.workers}-worker servers on every core (sharing one with the generator).",
        "",
        f"Generator ceiling: {ceiling.mean_rps:,.0f} req/s against {ceiling.label} using "
        f"{cpu:.0%} of its core"
        + (
            " (saturated: this is its ceiling)."
            if ceiling.floor
            else f", so about {estimate:,.0f} req/s at a full core."
        ),
        "",
        report.table(
            [
                "stack",
                "req/s",
                "rounds",
                "vs raw on Hypercorn",
                "p50 ms",
                "p99 ms",
                "errors + non-2xx",
                "generator CPU",
            ],
            rows,
        ),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
    else:
        sys.exit(main("baseline", sys.argv[1:]))
