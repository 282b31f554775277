"""``waitroom lookup ...``: make sample data, import a board's CSV, serve lookups."""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from waitroom.errors import ConfigError
from waitroom.lookup import capacity, sample, server
from waitroom.lookup.importing import importer
from waitroom.shared.secret_settings import (
    ENV_PREFIX,
    FILE_SUFFIX,
    MODES,
    check_keys,
    check_not_shared,
    parse_keys,
    read_secret,
    read_secret_file,
)

_SECRET_ENV = "WAITROOM_BACKEND_SECRET"  # noqa: S105 - the setting's name, not a secret
_GATEWAY_SECRET_ENV = "WAITROOM_SECRET_KEYS"  # noqa: S105 - the setting's name


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


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
    p.add_argument("file", type=Path, help="the CSV file (format: README.md, 'Uploading results')")
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
        "--secret-file",
        type=Path,
        help=f"a file with the admission keys, one a line or comma-separated, newest "
        f"first (default: ${_SECRET_ENV}, or the file ${_SECRET_ENV}{FILE_SUFFIX})",
    )
    p.add_argument(
        "--secret",
        help=f"deprecated, refused in production: every user sees it in `ps`; use "
        f"${_SECRET_ENV} or --secret-file",
    )
    p.add_argument("--server", choices=server.SERVERS, default="hypercorn")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    legacy = p.add_argument_group(
        "legacy origin",
        "With --capacity N the backend behaves like a real result site of fixed size: "
        "a pool of workers doing N lookups a second in all, a bounded backlog, a 500 "
        "after the queue timeout in it and nginx's 502 after the proxy timeout past it. "
        "Only POST /result and POST /api/result take a worker. Counters: GET "
        f"{capacity.COUNTERS_PATH}. One worker process.",
    )
    legacy.add_argument(
        "--capacity",
        type=_number,
        metavar="N",
        help="lookups a second the whole site does (off by default)",
    )
    legacy.add_argument(
        "--pool-workers",
        type=int,
        metavar="W",
        help=f"application workers; each lookup holds one for W/N seconds "
        f"(default {capacity.DEFAULT_WORKERS})",
    )
    legacy.add_argument(
        "--pool-backlog",
        type=int,
        metavar="B",
        help=f"lookups that may wait for a worker (default {capacity.DEFAULT_BACKLOG_S:g} "
        "seconds of work: 5 x N)",
    )
    legacy.add_argument(
        "--queue-timeout",
        type=_number,
        metavar="S",
        help=f"seconds in the backlog before a 500 (default {capacity.DEFAULT_QUEUE_TIMEOUT_S:g})",
    )
    legacy.add_argument(
        "--proxy-timeout",
        type=_number,
        metavar="S",
        help="seconds the proxy holds a lookup that found the backlog full before its 502; "
        "when shorter than --queue-timeout, a lookup still in the backlog then gets a 504 "
        f"(default {capacity.DEFAULT_PROXY_TIMEOUT_S:g}, nginx's)",
    )
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
    size = _capacity(args)
    keys = [] if args.standalone else _admission_keys(args, os.environ)
    server.serve(
        args.db,
        keys=keys,
        standalone=args.standalone,
        host=args.host,
        port=args.port,
        server=args.server,
        workers=args.workers,
        capacity=size,
    )
    return 0


_POOL_FLAGS = {
    "--pool-workers": "pool_workers",
    "--pool-backlog": "pool_backlog",
    "--queue-timeout": "queue_timeout",
    "--proxy-timeout": "proxy_timeout",
}


def _capacity(args: argparse.Namespace) -> capacity.Capacity | None:
    """The legacy origin's size from the flags; None for the lean backend."""
    if args.capacity is None:
        for flag, name in _POOL_FLAGS.items():
            value = getattr(args, name)
            if value is not None:
                raise ConfigError(flag, value, "sizes the legacy origin: give --capacity N too")
        return None
    given = {
        key: getattr(args, name)
        for key, name in zip(
            ("workers", "backlog", "queue_timeout_s", "proxy_timeout_s"),
            _POOL_FLAGS.values(),
            strict=True,
        )
        if getattr(args, name) is not None
    }
    return capacity.Capacity(per_s=args.capacity, **given)


def _admission_keys(args: argparse.Namespace, environ: os._Environ[str]) -> list[str]:
    """The backend's admission keys, checked as the gateway checks its own.

    In production mode (``WAITROOM_MODE``, production unless set, as for the
    gateway) weak keys are refused, and so is a key the gateway signs tickets with:
    the backend must not hold what forges a place in line.
    """
    mode = environ.get(ENV_PREFIX + "MODE", "production")
    if mode not in MODES:
        raise ConfigError(ENV_PREFIX + "MODE", mode, f"must be one of {', '.join(MODES)}")
    production = mode == "production"
    if args.secret is not None:
        if production:
            raise ConfigError(
                "--secret",
                "<hidden>",
                "a key on the command line is visible to every user of this machine in "
                f"`ps`; set {_SECRET_ENV}, or put the key in a file readable only by this "
                "service and pass --secret-file PATH",
            )
        logging.getLogger(__name__).warning(
            "lookup: --secret is deprecated (every user sees it in `ps`); use %s or --secret-file",
            _SECRET_ENV,
        )
        raw: str | None = args.secret
    elif args.secret_file is not None:
        raw = read_secret_file("--secret-file", str(args.secret_file))
    else:
        raw = read_secret(environ, _SECRET_ENV)
    keys = list(parse_keys(raw or ""))
    hint = (
        f"set {_SECRET_ENV} (or {_SECRET_ENV}{FILE_SUFFIX}, or pass --secret-file PATH) to "
        "the admission keys the gateway has in its own WAITROOM_BACKEND_SECRET, or pass "
        "--standalone for a demo without the waiting room"
    )
    if not keys:
        raise ConfigError(_SECRET_ENV, "", f"the backend needs its admission keys: {hint}")
    if production:
        check_keys(_SECRET_ENV, keys, hint)
        try:
            gateway_keys = read_secret(environ, _GATEWAY_SECRET_ENV)
        except ConfigError:
            gateway_keys = None  # the backend need not be able to read the gateway's file
        check_not_shared(keys, parse_keys(gateway_keys or ""))
    return keys
