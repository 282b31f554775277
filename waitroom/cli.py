"""The ``waitroom`` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from waitroom.errors import WaitroomError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="waitroom",
        description="A virtual waiting room for exam-result releases.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from lookup import cli as lookup_cli

    lookup_cli.register(commands)
    return parser


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
