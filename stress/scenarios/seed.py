"""``seed``: the load test of the document that started this project, redone.

700, 7,000 and 14,000 users spawned at 700 per second, each waiting 0-1 s between
its requests, against the result site directly (no waiting room) and through
waitroom, side by side. The result site is the legacy origin, 200 lookups a second
(``--origin``, ``--capacity``): a site of fixed size, as a board's is. Each
user is a student on a journey (see ``stress.journeys.student``): one lookup of their own
marksheet, trying again after a failure, not a loop of requests forever, because a
student who has the result leaves. Prints the document's table (users, mean time,
requests per second, % failures) for both, and what the students got out of it: their
own marksheet, and every 5xx by who answered it.
"""

from __future__ import annotations

import argparse

from stress.harness import report
from stress.harness.stack import sample_db
from stress.journeys import arrivals
from stress.scenarios.run import Outcome
from stress.scenarios.spike import (
    add_common,
    check,
    crowd_of,
    describe,
    document_table,
    finish,
    run_target,
)

SPAWN_PER_S = 700.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress seed", description=__doc__)
    parser.add_argument("--users", default="700,7000,14000", help="comma-separated crowd sizes")
    parser.add_argument("--spawn-rate", type=float, default=SPAWN_PER_S, help="users a second")
    parser.add_argument(
        "--targets", default="direct,waitroom", help="direct, waitroom or both (comma-separated)"
    )
    add_common(parser)
    # The document's users neither abandoned nor refreshed; only their 0-1 s waits.
    parser.set_defaults(abandon_share=0.0, impatient_share=0.0)
    return parser


def main(scenario: str, argv: list[str]) -> int:
    parser = build_parser()
    args = check(parser, parser.parse_args(argv))
    sizes = [int(u) for u in args.users.split(",") if u]
    targets = [t for t in args.targets.split(",") if t]
    if "both" in targets:
        targets = ["direct", "waitroom"]
    db = sample_db(args.candidates)
    outcomes: list[Outcome] = []
    for n in sizes:
        for target in targets:
            label = f"{n} users {target}"
            plan = crowd_of(args, arrivals.spawn(n, args.spawn_rate))
            outcomes.append(run_target(args, label, db, plan, target))
            report.say(document_table(outcomes[-1:]))
    shape = (
        f"users spawned at {args.spawn_rate:g}/s, 0-1 s between a user's requests; {describe(args)}"
    )
    return finish(scenario, argv, shape, outcomes)
