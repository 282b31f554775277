"""The ``waitroom`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from typing import Any

from waitroom.errors import WaitroomError
from waitroom.line.store import topology_of
from waitroom.settings import Settings, parse_rate
from waitroom.shared.secret_settings import ENV_PREFIX, FILE_SUFFIX

# Flags of `waitroom serve`: each maps to the Settings field of the same name.
_SERVE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("--host", str, "address to listen on"),
    ("--port", int, "port to listen on"),
    ("--workers", int, "worker processes"),
    ("--backlog", int, "listen backlog (default 2048: a result-day spike needs thousands)"),
    ("--server", str, "hypercorn (default) or granian"),
    (
        "--redis-url",
        str,
        "Redis URL: redis://, rediss://, unix://, redis+sentinel://h:p,h:p/<primary>/<db> "
        "or redis+cluster://h:p,h:p",
    ),
    ("--backend-url", str, "lookup backend base URL"),
    ("--room", str, "room name"),
    (
        "--rate",
        str,
        "admissions per second, or auto: find what the backend can take, at most "
        "WAITROOM_RATE when that is a number, else 1000/s",
    ),
    ("--max-active", int, "most admissions counted as active at once"),
    ("--pass-ttl-s", int, "lifetime of an admission pass, seconds"),
    ("--mode", str, "production (default), demo or test"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waitroom",
        description="A virtual waiting room for exam-result releases.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the gateway",
        description="Run the gateway. Every flag may also be given as WAITROOM_<FLAG> "
        "(for example WAITROOM_RATE=50); secrets never as flags (a command line is "
        "visible to every user in `ps`), only as variables or files: "
        "WAITROOM_SECRET_KEYS and WAITROOM_BACKEND_SECRET (comma-separated, newest first), "
        "or WAITROOM_SECRET_KEYS_FILE and WAITROOM_BACKEND_SECRET_FILE (a file with the "
        "keys, one a line or comma-separated).",
    )
    for flag, kind, text in _SERVE_FLAGS:
        serve.add_argument(flag, type=kind, help=text)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser(
        "demo",
        help="run Redis, the lookup backend and the gateway with sample results",
    )
    demo.add_argument("--port", type=int, default=8080, help="gateway port (default 8080)")
    demo.add_argument("--students", type=int, default=100_000, help="sample candidates")
    demo.add_argument(
        "--rate",
        type=float,
        default=2.0,
        help="admissions per second (default 2, so the line is visible)",
    )
    demo.add_argument(
        "--crowd",
        type=int,
        default=0,
        help="keep this many simulated students in line, so the line moves (default 0)",
    )
    demo.add_argument("--data-dir", default="data", help="where the sample data is kept")
    demo.set_defaults(run=_demo)

    hashing = commands.add_parser(
        "hash-password",
        help="print the hash of an admin password, for WAITROOM_ADMIN_PASSWORD_HASH",
        description="Reads the password from the terminal (asked twice), or from "
        "standard input when it is not a terminal, and prints its scrypt hash.",
    )
    hashing.set_defaults(run=_hash_password)

    order = commands.add_parser(
        "release-order",
        help="print a scheduled release's pre-queue order, to audit it",
        description="Recomputes the random order of a release's pre-queue from the seed "
        "the admin page shows after the release: one line per place, the pre-queue "
        "position that got it.",
    )
    order.add_argument("--seed", required=True, help="the release seed (hex)")
    order.add_argument("--first", type=int, required=True, help="first pre-queue position")
    order.add_argument("--last", type=int, required=True, help="last pre-queue position")
    order.set_defaults(run=_release_order)

    from waitroom.lookup.cli import register as register_lookup

    register_lookup(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from waitroom.shared import server

    overrides: dict[str, Any] = {}
    for flag, _, _ in _SERVE_FLAGS:
        name = flag.lstrip("-").replace("-", "_")
        overrides[name] = getattr(args, name)
    if args.rate is not None:
        # A number sets the admin's rate; auto turns the search on, and the rate
        # (from the environment, or the default) is the most it may reach.
        overrides["rate"], auto = parse_rate(ENV_PREFIX + "RATE", args.rate)
        if auto:
            overrides["rate_auto"] = True
    settings = Settings.from_env(**overrides)  # validates; raises ConfigError
    # The workers build their app from the variables; the secrets read from files
    # are among them, so the file settings would only say the same thing twice.
    for spec in dataclasses.fields(settings):
        if spec.metadata.get("secret"):
            os.environ.pop(ENV_PREFIX + spec.name.upper() + FILE_SUFFIX, None)
    os.environ.update(settings.to_env())
    print(
        f"waitroom: gateway on http://{settings.host}:{settings.port} "
        f"({settings.server}, {settings.workers} worker(s), room {settings.room!r}, "
        f"{_rate_text(settings)}, redis {topology_of(settings)})",
        file=sys.stderr,
    )
    return server.run(
        "waitroom.gateway.asgi:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        backlog=settings.backlog,
        server=settings.server,
    )


def _rate_text(settings: Settings) -> str:
    if settings.rate_auto:
        return f"rate auto, at most {settings.rate:g}/s"
    return f"{settings.rate:g}/s"


def _demo(args: argparse.Namespace) -> int:
    from waitroom.devtools import demo

    return demo.run(
        port=args.port,
        students=args.students,
        rate=args.rate,
        data_dir=args.data_dir,
        crowd=args.crowd,
    )


def _hash_password(args: argparse.Namespace) -> int:
    import getpass

    from waitroom.shared.passwords import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Admin password: ")
        if getpass.getpass("Again: ") != password:
            print("waitroom: error: the two passwords differ; nothing printed", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 12:
        print(
            "waitroom: error: use an admin password of at least 12 characters",
            file=sys.stderr,
        )
        return 2
    print(hash_password(password))
    return 0


def _release_order(args: argparse.Namespace) -> int:
    from waitroom.line import release

    first, last = args.first, args.last
    if first < 1 or last < first:
        print(f"waitroom: error: need 1 <= --first <= --last; got {first}, {last}", file=sys.stderr)
        return 2
    for place, k in enumerate(release.order(args.seed, last - first + 1), start=first):
        print(f"{place}\t{first + k - 1}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except WaitroomError as exc:
        print(f"waitroom: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


__all__ = ["build_parser", "main"]
