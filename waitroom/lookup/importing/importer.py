"""Import a board's CSV file (see :mod:`.csvformat`) into a results database.

One pass over the file checks every row and, while no problem has been seen, writes
it into a *new* SQLite file beside the target. Only a file without a single problem
is swapped in, with ``os.replace``: readers see the old file or the new one, never a
half-written one, and a failed, interrupted or even SIGKILLed import leaves the old
results answering. All problems are collected (line, column, value), not just the
first, so a board fixes its file in one round.

Speed (2,000,000 rows in well under a minute on 2 cores): the file is cut into blocks
of whole lines that worker processes check and serialise (:mod:`waitroom.lookup.importing.validate`)
while this process checks roll numbers for duplicates and inserts, in file order,
into a ``WITHOUT ROWID`` table keyed by roll number. The new file is written with
the journal and fsync off in one transaction - safe because nobody reads it before
it is complete, synced and renamed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import multiprocessing
import os
import sqlite3
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from waitroom.lookup.errors import ImportFailed, ImportRejected, Problem
from waitroom.lookup.importing.validate import (
    KEEP_PROBLEMS,
    BlockResult,
    RowChecker,
    check_block,
    check_header,
)
from waitroom.shared.processes import die_with_parent

SCHEMA_VERSION = "1"
SHOW_PROBLEMS = 50
_BLOCK_BYTES = 2 << 20
_PARALLEL_FROM_BYTES = 8 << 20  # below this, starting worker processes costs more
_BOM = b"\xef\xbb\xbf"

SCHEMA = """
CREATE TABLE results (
    roll TEXT PRIMARY KEY,
    dob TEXT NOT NULL,
    doc BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class ImportReport:
    db: Path
    source: Path
    rows: int
    sha256: str
    seconds: float


class _Problems:
    def __init__(self) -> None:
        self.kept: list[Problem] = []
        self.count = 0

    def add(self, problems: list[Problem], count: int) -> None:
        self.kept.extend(problems[: KEEP_PROBLEMS - len(self.kept)])
        self.count += count


def _blocks(f: BinaryIO, digest: Any) -> Iterator[tuple[bytes, int]]:
    """Blocks of whole lines with the number of their first line; line 1 is alone."""
    rest = b""
    line = 1
    first = True
    while True:
        raw = f.read(_BLOCK_BYTES)
        digest.update(raw)
        data = rest + raw
        if first:
            first = False
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
            cut = data.find(b"\n") + 1
            if cut == 0 and raw:
                rest = data  # a header longer than a block: keep reading
                first = True
                continue
            header, data = (data[:cut], data[cut:]) if cut else (data, b"")
            yield header, 1
            line = 2
        if not raw:
            if data:
                yield data, line
            return
        cut = data.rfind(b"\n") + 1
        data, rest = data[:cut], data[cut:]
        if data:
            yield data, line
            line += data.count(b"\n")


def _header_order(header: bytes, problems: _Problems) -> tuple[bool, list[int] | None]:
    """(header usable, column order) after recording any header problems."""
    checker = RowChecker()
    order = check_header(checker, header)
    problems.add(checker.problems, checker.problem_count)
    if order is None:
        return False, None
    return True, (None if order == sorted(order) else order)


def _stale_temp_files(db: Path) -> Iterator[Path]:
    """Temp files left by imports that were killed (their process is gone)."""
    for path in db.parent.glob(f".{db.name}.import-*.tmp"):
        try:
            pid = int(path.name.rsplit("-", 1)[1].split(".")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            yield path
        except (ValueError, IndexError, PermissionError):
            continue


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def import_csv(source: Path, db: Path, *, workers: int | None = None) -> ImportReport:
    """Check ``source`` and, if it is clean, atomically replace ``db`` with it.

    Raises :class:`ImportRejected` listing every problem (nothing imported) or
    :class:`ImportFailed` when the file or the directory cannot be used.
    ``workers``: checking processes (default: one per core for large files).
    """
    started = time.perf_counter()
    db = db.absolute()
    if not db.parent.is_dir():
        raise ImportFailed(f"database directory {str(db.parent)!r} does not exist")
    if db.is_dir():
        raise ImportFailed(f"database path {str(db)!r} is a directory")
    for stale in _stale_temp_files(db):
        stale.unlink(missing_ok=True)
    try:
        f = source.open("rb")
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise ImportFailed(f"cannot read {str(source)!r}: {exc.strerror}") from exc
    if workers is None:
        workers = (os.cpu_count() or 1) if size >= _PARALLEL_FROM_BYTES else 0
    tmp = db.with_name(f".{db.name}.import-{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        with f:
            problems, count, sha = _load(f, conn, workers)
        if count == 0 and not problems.count:
            problems.add([Problem(2, "-", "", "the file has no data rows")], 1)
        if problems.count:
            raise ImportRejected(source, problems.kept, problems.count, SHOW_PROBLEMS)
        meta = {
            "schema_version": SCHEMA_VERSION,
            "row_count": str(count),
            "source_name": source.name,
            "source_sha256": sha,
            "source_bytes": str(size),
            "imported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
        conn.execute("COMMIT")
        conn.close()
        # Journal and sync were off while writing: make the bytes durable before the
        # rename makes the file visible, and the rename durable after it.
        _fsync(tmp)
        os.replace(tmp, db)
        _fsync(db.parent)
        return ImportReport(db, source, count, sha, time.perf_counter() - started)
    finally:
        conn.close()
        tmp.unlink(missing_ok=True)


def _results(
    blocks: Iterator[tuple[bytes, int]], order: list[int] | None, workers: int
) -> Iterator[BlockResult]:
    """check_block over the blocks, in order, on ``workers`` processes (0: here)."""
    if workers <= 0:
        for data, line in blocks:
            yield check_block(data, line, order)
        return
    # fork: workers inherit the loaded modules and start in milliseconds.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=die_with_parent) as pool:
        pending: deque[Future[BlockResult]] = deque()
        try:
            for data, line in blocks:
                pending.append(pool.submit(check_block, data, line, order))
                # A bounded window keeps memory flat: at most this many blocks in flight.
                if len(pending) >= workers * 3:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _load(f: BinaryIO, conn: sqlite3.Connection, workers: int) -> tuple[_Problems, int, str]:
    conn.executescript(
        "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA page_size=16384;"
        "PRAGMA cache_size=-262144; PRAGMA locking_mode=EXCLUSIVE;"
    )
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    digest = hashlib.sha256()
    problems = _Problems()
    blocks = _blocks(f, digest)
    header = next(blocks, None)
    if header is None or not header[0].strip():
        problems.add([Problem(1, "-", "", "the file is empty; expected a header line")], 1)
        return problems, 0, digest.hexdigest()
    ok, order = _header_order(header[0], problems)
    if not ok:
        for _ in blocks:  # still hash the whole file for the report
            pass
        return problems, 0, digest.hexdigest()
    seen: dict[str, int] = {}
    count = 0
    for result in _results(blocks, order, workers):
        problems.add(result.problems, result.problem_count)
        dups: list[Problem] = []
        for (roll, _dob, _doc), line in zip(result.good, result.lines, strict=True):
            first = seen.setdefault(roll, line)
            if first != line:
                dups.append(
                    Problem(line, "roll_no", roll, f"duplicate roll number, first on line {first}")
                )
        if dups:
            problems.add(dups, len(dups))
        if not problems.count:  # once anything is wrong nothing will be kept: stop writing
            conn.executemany("INSERT INTO results VALUES (?, ?, ?)", result.good)
            count += len(result.good)
    if problems.count:
        # Problems come per block in file order except duplicates found afterwards.
        problems.kept.sort(key=lambda p: p.line)
    return problems, count, digest.hexdigest()
