"""``spike`` and ``release``: a result-day crowd through the waiting room (or not).

``spike``: N students within S seconds, the burst when the result link goes out.
``release``: a realistic curve, a few early birds, a sharp peak at the release
minute and a long tail. Both run against the result site alone and through the
waiting room (``--target``), one after the other. The result site is the legacy
origin by default (``--origin legacy``: ``waitroom lookup serve --capacity``, a
site of fixed size, 200 lookups a second, that answers 500 and 502 past it as real
ones do), and the waiting room admits just under its capacity; ``--origin lean``
is the lean backend, which this machine cannot saturate. Defaults are sized to this
2-core machine: 10,000 students is about what one loader process drives without
saturating its core, and the peak arrival rate is above what one gateway worker
can take in.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stress.harness import plots, report
from stress.harness.stack import sample_db
from stress.journeys import arrivals
from stress.journeys.crowd import Crowd
from stress.journeys.student import Behaviour
from stress.scenarios.run import Outcome, one
from waitroom.lookup import sample

# Through the waiting room, admission just under what the origin can do: students
# admitted together do not arrive evenly, and the origin's backlog absorbs the rest.
RATE_SHARE_OF_CAPACITY = 0.9
LEAN_RATE = 200.0


def add_common(parser: argparse.ArgumentParser) -> None:
    """Options every HTTP scenario shares."""
    parser.add_argument(
        "--origin",
        choices=("legacy", "lean"),
        default="legacy",
        help="the result site: legacy (a fixed capacity, fails as real sites do; "
        "default) or lean (the lookup backend as shipped)",
    )
    parser.add_argument(
        "--capacity",
        type=float,
        default=200.0,
        help="the legacy origin's lookups a second (default 200)",
    )
    parser.add_argument(
        "--rate",
        help=f"the gateway's --rate, passed on as given (a number of admissions a "
        f"second, or any other value the gateway takes); default "
        f"{RATE_SHARE_OF_CAPACITY:g} x --capacity for the legacy origin, "
        f"{LEAN_RATE:g} for the lean one",
    )
    parser.add_argument("--candidates", type=int, default=100_000, help="sample data size")
    parser.add_argument("--app-share", type=float, default=0.25, help="JSON clients' share")
    parser.add_argument("--abandon-share", type=float, default=0.05)
    parser.add_argument("--impatient-share", type=float, default=0.1)
    parser.add_argument("--patience", type=float, default=120.0, help="seconds of failures")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=600.0, help="after the last arrival")
    parser.add_argument("--gateway-workers", type=int, default=1)
    parser.add_argument("--backend-workers", type=int, default=1)
    parser.add_argument("--server", default="hypercorn", choices=("hypercorn", "granian"))
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="do not keep servers on core 0"
    )
    parser.add_argument("--quiet", action="store_true", help="no live progress line")
    parser.add_argument("--seed", type=int, default=1, help="of the crowd's random draws")


def check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """The options that only make sense together, and the rate the gateway gets."""
    if args.origin == "legacy":
        if args.capacity <= 0:
            parser.error(f"--capacity must be > 0 lookups a second, got {args.capacity:g}")
        if args.backend_workers != 1:
            parser.error(
                f"--backend-workers {args.backend_workers}: the legacy origin's pool lives "
                "in one process (size it with --capacity)"
            )
    args.rate = rate_of(args)
    return args


def rate_of(args: argparse.Namespace) -> float | str:
    """``--rate`` as a number when it is one; any other value goes to the gateway as is."""
    if args.rate is None:
        return RATE_SHARE_OF_CAPACITY * args.capacity if args.origin == "legacy" else LEAN_RATE
    try:
        return float(args.rate)
    except ValueError:
        return str(args.rate)


def capacity_of(args: argparse.Namespace) -> float | None:
    return float(args.capacity) if args.origin == "legacy" else None


def describe(args: argparse.Namespace) -> str:
    """The systems of a run, for the report's first line."""
    origin = (
        f"a legacy origin of {args.capacity:g} lookups/s"
        if args.origin == "legacy"
        else "the lean lookup backend"
    )
    rate = f"{args.rate:g}/s" if isinstance(args.rate, float) else f"rate {args.rate}"
    return (
        f"{origin}; waitroom admitting {rate} ({args.gateway_workers} gateway worker(s), "
        f"{args.server})"
    )


def behaviour(args: argparse.Namespace) -> Behaviour:
    return Behaviour(
        patience_s=args.patience,
        timeout_s=args.timeout,
        app_share=args.app_share,
        abandon_share=args.abandon_share,
        impatient_share=args.impatient_share,
    )


def build_parser(scenario: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m stress {scenario}", description=__doc__)
    parser.add_argument("--students", type=int, default=10_000)
    if scenario == "spike":
        parser.add_argument("--within", type=float, default=10.0, help="seconds")
    else:
        parser.add_argument("--release-at", type=float, default=10.0, help="seconds in")
        parser.add_argument("--tail", type=float, default=30.0, help="decay time, seconds")
        parser.add_argument("--until", type=float, default=120.0, help="last arrival, s")
    parser.add_argument("--target", default="both", choices=("waitroom", "direct", "both"))
    add_common(parser)
    return parser


def crowd_of(args: argparse.Namespace, times: list[float]) -> Crowd:
    return Crowd(
        arrivals=times,
        behaviour=behaviour(args),
        candidates=args.candidates,
        seed=sample.DEFAULT_SEED,
        deadline_s=args.deadline,
        rng_seed=args.seed,
        progress=not args.quiet,
    )


def run_target(args: argparse.Namespace, label: str, db: Path, plan: Crowd, target: str) -> Outcome:
    """One crowd against a fresh stack, ``target`` "waitroom" or "direct", as the
    common options (``add_common``) say."""
    return one(
        label,
        db,
        plan,
        waitroom=target == "waitroom",
        rate=args.rate,
        capacity=capacity_of(args),
        pin=args.pin,
        gateway_workers=args.gateway_workers,
        backend_workers=args.backend_workers,
        server=args.server,
    )


def target_name(s: dict[str, Any]) -> str:
    if s["target"] != "waitroom":
        return "direct"
    rate = s["stack"]["rate"]
    return f"waitroom {rate:g}/s" if isinstance(rate, float | int) else f"waitroom, rate {rate}"


def origin_5xx(s: dict[str, Any]) -> str:
    """The origin's own count of 500 / 502 / 504 (the legacy origin's counters)."""
    origin = s.get("origin")
    if not origin:
        return "-"
    answered = origin["answered"]
    return " / ".join(f"{answered.get(code, 0):,}" for code in ("500", "502", "504"))


def own_marksheet(s: dict[str, Any]) -> str:
    """The share of students who got their own marksheet, of those who did not
    choose to leave the line (``--abandon-share``)."""
    left = s["outcomes"].get("abandoned", 0)
    share = f"{100 * s['got_own_marksheet'] / max(1, s['students'] - left):.1f}%"
    return f"{share} ({left:,} left)" if left else share


def document_table(outcomes: list[Outcome]) -> str:
    """The seed document's columns (users, mean time, requests/s, % failures), then
    what the students got: their own marksheet, and every 5xx by who answered it."""
    rows = []
    for o in outcomes:
        s = o.summary
        rows.append(
            [
                s["students"],
                target_name(s),
                s["mean_ms"],
                s["rps"],
                s["failure_pct"],
                own_marksheet(s),
                s["calm_503"],
                sum(s["bad_5xx"].values()),
                origin_5xx(s),
                s["timeouts"] + sum(s["errors"].values()),
                s["time_to_result_s"].get("p50"),
                s["time_to_result_s"].get("max"),
                f"{s['loader']['cpu_max']:.0%}",
            ]
        )
    return report.table(
        [
            "users",
            "target",
            "mean time ms",
            "requests/s",
            "% failures",
            "own marksheet",
            "calm busy 503",
            "other 5xx seen",
            "origin 500 / 502 / 504",
            "timeouts + conn. errors",
            "to result p50 s",
            "max s",
            "loader CPU max",
        ],
        rows,
    )


def outcome_row(o: Outcome) -> list[Any]:
    s = o.summary
    line: dict[str, Any] = s.get("rate") or {}
    eta: dict[str, Any] = s.get("eta") or {}
    return [
        o.label,
        s["students"],
        s["got_own_marksheet"],
        s["wrong_marksheet"],
        s["outcomes"].get("abandoned", 0),
        s["outcomes"].get("gave-up", 0) + s["outcomes"].get("pending", 0),
        sum(s["bad_5xx"].values()),
        s["timeouts"] + sum(s["errors"].values()),
        s["time_to_result_s"].get("p50"),
        s["time_to_result_s"].get("p90"),
        s.get("admission_inversions"),
        (line.get("achieved") or {}).get("per_s"),
        (line.get("achieved") or {}).get("target_per_s"),
        line.get("configured_per_s"),
        (eta.get("error_s") or {}).get("p50"),
        s["loader"]["cpu_max"],
    ]


OUTCOME_HEADERS = [
    "run",
    "students",
    "own marksheet",
    "wrong",
    "abandoned",
    "gave up / unfinished",
    "5xx (not 503 busy)",
    "conn. errors + timeouts",
    "to result p50 s",
    "p90 s",
    "inversions",
    "admitted/s",
    "aimed/s",
    "configured/s",
    "ETA error p50 s",
    "loader CPU max",
]


def routes_table(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        for route, r in o.summary["routes"].items():
            statuses = ", ".join(f"{k} {v}" for k, v in sorted(r["statuses"].items()))
            latency = [r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"]]
            rows.append([o.label, route, r["count"], *latency, statuses])
    return report.table(
        ["run", "route", "requests", "p50 ms", "p90 ms", "p99 ms", "max ms", "statuses"], rows
    )


def main(scenario: str, argv: list[str]) -> int:
    parser = build_parser(scenario)
    args = check(parser, parser.parse_args(argv))
    if scenario == "spike":
        times = arrivals.spike(args.students, args.within, args.seed)
        shape = f"{args.students:,} students within {args.within:g} s"
    else:
        times = arrivals.release(
            args.students,
            release_at_s=args.release_at,
            tail_s=args.tail,
            until_s=args.until,
            seed=args.seed,
        )
        shape = (
            f"{args.students:,} students, release at {args.release_at:g} s, "
            f"tail {args.tail:g} s, last arrival by {args.until:g} s"
        )
    shape += f"; {describe(args)}"
    db = sample_db(args.candidates)
    targets = ["direct", "waitroom"] if args.target == "both" else [args.target]
    outcomes = [run_target(args, f"{scenario} {t}", db, crowd_of(args, times), t) for t in targets]
    return finish(scenario, argv, shape, outcomes)


def finish(scenario: str, argv: list[str], shape: str, outcomes: list[Outcome]) -> int:
    head = report.header(scenario, argv)
    document = document_table(outcomes)
    summary = report.table(OUTCOME_HEADERS, [outcome_row(o) for o in outcomes])
    routes = routes_table(outcomes)
    markdown = f"{shape}.\n\n{document}\n\nIn detail:\n\n{summary}\n\nBy route:\n\n{routes}\n"
    report.say()
    report.say(markdown)
    data = {
        **head,
        "shape": shape,
        "runs": [{**o.summary, "timeline": o.timeline} for o in outcomes],
        "server_logs": {o.label: o.logs for o in outcomes},
    }
    folder = report.write(scenario, data, markdown)
    pngs = plots.draw([o.series for o in outcomes], folder, scenario)
    report.say(f"report: {folder} ({len(pngs)} plots)")
    return (
        0 if all(healthy(o.summary) for o in outcomes if o.summary["target"] == "waitroom") else 1
    )


def healthy(s: dict[str, Any]) -> bool:
    """What the waiting room promises: no 5xx but calm 503s, own marksheets, order."""
    return (
        not s["bad_5xx"]
        and not s["wrong_marksheet"]
        and not s.get("admission_inversions")
        and not s.get("admitted_ahead_of_the_line")
    )
