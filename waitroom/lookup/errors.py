"""The exceptions the lookup backend raises on purpose.

They subclass :class:`waitroom.errors.WaitroomError` so ``waitroom.cli.main`` prints
them as one clean line and exits 2, without a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from waitroom.errors import WaitroomError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an uploaded CSV file, located precisely enough to fix."""

    line: int
    column: str
    value: str
    message: str

    def __str__(self) -> str:
        shown = self.value if len(self.value) <= 60 else self.value[:57] + "..."
        return f"line {self.line}, column {self.column}: {self.message} (value {shown!r})"


class ImportRejected(WaitroomError):
    """The CSV file had problems; nothing was imported and the old database stays."""

    def __init__(self, source: Path, problems: Sequence[Problem], total: int, shown: int) -> None:
        self.source = source
        self.problems = list(problems)
        self.total = total
        lines = [f"{source}: {total} problem(s); nothing was imported, the old results stay:"]
        lines.extend(f"  {p}" for p in self.problems[:shown])
        if total > shown:
            lines.append(f"  ... and {total - shown} more problem(s) not shown")
        super().__init__("\n".join(lines))


class ImportFailed(WaitroomError):
    """The import could not run at all (unreadable file, unwritable directory)."""


class DatabaseMissing(WaitroomError):
    """The results database does not exist or is not a waitroom results database."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(
            f"results database {str(path)!r} cannot be opened: {detail}; "
            "run `waitroom lookup import FILE --db PATH` first"
        )
