"""``waitroom lookup ...``: make sample data, import a board's CSV, serve lookups."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from lookup import importer, sample, server

_SECRET_ENV = "WAITROOM_BACKEND_SECRET"  # noqa: S105 - the setting's name, not a secret


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return value


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lookup = commands.add_parser("lookup", help="the result-lookup backend", description=__doc__)
    sub = lookup.add_subparsers(dest="lookup_command", required=True, metavar="ACTION")

    p = sub.add_parser("sample", help="write a CSV of realistic sample candidates")
    p.add_argument("--students", type=_positive, default=sample.DEFAULT_STUDENTS)
    p.add_argument("--out", type=Path, required=True, help="CSV file to write")
    p.add_argument("--seed", type=int, default=sample.DEFAULT_SEED)
    p.add_argument("--exam", default=sample.DEFAULT_EXAM)
    p.set_defaults(run=_run_sample)

    p = sub.add_parser(
        "import",
        help="check a board's CSV and swap it in as the results database",
        description="Every problem is listed with its line and column and nothing is "
        "imported; the previous database keeps answering.",
    )
    p.add_argument("file", type=Path, help="the CSV file (format: lookup/README_SECTIONS.md)")
    p.add_argument("--db", type=Path, required=True, help="results database to replace")
    p.add_argument("--workers", type=int, default=None, help="checking processes (default: auto)")
    p.set_defaults(run=_run_import)

    p = sub.add_parser("serve", help="serve result lookups over HTTP")
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=_port, default=8100)
    p.add_argument(
        "--standalone",
        action="store_true",
        help="no admission check (a demo without the waiting room in front)",
    )
    p.add_argument(
        "--secret",
        help=f"admission keys, comma-separated, newest first (default: ${_SECRET_ENV})",
    )
    p.add_argument("--server", choices=server.SERVERS, default="hypercorn")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.set_defaults(run=_run_serve)


def _run_sample(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    sample.write_csv(args.out, args.students, args.seed, args.exam)
    took = time.perf_counter() - started
    print(f"wrote {args.students} candidates to {args.out} in {took:.1f} s (seed {args.seed})")
    return 0


def _run_import(args: argparse.Namespace) -> int:
    # ImportRejected lists every problem; waitroom.cli prints it and exits 2.
    report = importer.import_csv(args.file, args.db, workers=args.workers)
    print(
        f"imported {report.rows} results from {report.source} into {report.db} "
        f"in {report.seconds:.1f} s (sha256 {report.sha256[:16]}...)"
    )
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    keys = server.split_keys(
        args.secret if args.secret is not None else os.environ.get(_SECRET_ENV)
    )
    server.serve(
        args.db,
        keys=keys,
        standalone=args.standalone,
        host=args.host,
        port=args.port,
        server=args.server,
        workers=args.workers,
    )
    return 0
