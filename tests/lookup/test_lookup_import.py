from __future__ import annotations

import csv
import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from waitroom.cli import main
from waitroom.lookup import sample
from waitroom.lookup.errors import ImportRejected
from waitroom.lookup.importing.csvformat import COLUMNS, row_of
from waitroom.lookup.importing.importer import import_csv
from waitroom.lookup.marksheet import Marksheet
from waitroom.lookup.store import ResultStore

SEED = 21


def _csv_text(rows: list[list[str]], header: list[str] | tuple[str, ...] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _rows(n: int, seed: int = SEED) -> list[list[str]]:
    return [row_of(sample.candidate(seed, k)) for k in range(n)]


def _col(name: str) -> int:
    return COLUMNS.index(name)


def _snapshot(db: Path) -> list[tuple[str, str, bytes]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT roll, dob, doc FROM results ORDER BY roll").fetchall()


@pytest.fixture
def good_db(tmp_path: Path) -> Path:
    src = tmp_path / "good.csv"
    src.write_text(_csv_text(_rows(50)), encoding="utf-8")
    db = tmp_path / "results.sqlite3"
    report = import_csv(src, db)
    assert report.rows == 50
    return db


def test_import_stores_the_marksheets_as_the_model_serialises_them(good_db: Path) -> None:
    store = ResultStore(good_db)
    for k in (0, 17, 49):
        sheet = sample.candidate(SEED, k)
        found = store.get(sheet.roll)
        assert found == (sheet.dob.isoformat(), sheet.to_json())
    assert store.get(sample.roll_of(50)) is None
    assert store.meta["row_count"] == "50"
    assert store.meta["source_name"] == "good.csv"
    assert len(store.meta["source_sha256"]) == 64
    store.close()


def test_every_bad_row_is_reported_and_nothing_is_imported(
    good_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(good_db)
    rows = _rows(40, seed=99)
    # line numbers: header is line 1, rows[i] is line i + 2
    bad: dict[int, tuple[str, str]] = {}

    def spoil(i: int, column: str, value: str) -> None:
        rows[i][_col(column)] = value
        bad[i + 2] = (column, value)

    spoil(1, "dob", "2008-02-30")
    spoil(3, "sub2_theory", "105")
    spoil(5, "sub3_practical", "twelve")
    spoil(7, "candidate_name", "")
    spoil(9, "roll_no", "21A0001")
    spoil(11, "sub1_grade", "A3")
    spoil(13, "result", "FAILED")
    spoil(15, "dob", "15/08/2008")
    spoil(17, "mother_name", "   ")
    rows[19][_col("sub4_total")] = str(int(rows[19][_col("sub4_total")]) + 1)
    bad[21] = ("sub4_total", rows[19][_col("sub4_total")])
    rows[21][_col("roll_no")] = rows[0][_col("roll_no")]  # duplicate of line 2
    bad[23] = ("roll_no", rows[0][_col("roll_no")])
    rows[23] = rows[23][:-1]  # a missing field
    bad[25] = ("-", "44 fields")
    rows[25] = [*rows[25], "extra"]
    bad[27] = ("-", "46 fields")
    for f in ("code", "name", "theory", "practical", "total", "grade"):
        rows[27][_col(f"sub5_{f}")] = ""  # a required subject left out
    bad[29] = ("sub5_code", "")
    src = tmp_path / "bad.csv"
    src.write_text(_csv_text(rows), encoding="utf-8")

    code = main(["lookup", "import", str(src), "--db", str(good_db)])
    assert code == 2
    err = capsys.readouterr().err
    for line, (column, value) in bad.items():
        assert f"line {line}, column {column}:" in err, (line, column, err)
        assert repr(value) in err or value == "", (value, err)
    assert f"{len(bad)} problem(s)" in err
    assert "duplicate roll number, first on line 2" in err
    assert "total must equal theory + practical" in err
    assert _snapshot(good_db) == before
    assert not list(tmp_path.glob(".results.sqlite3.import-*"))


def test_long_problem_lists_are_capped_with_a_count(tmp_path: Path) -> None:
    rows = _rows(80)
    for r in rows:
        r[_col("dob")] = "not a date"
    src = tmp_path / "bad.csv"
    src.write_text(_csv_text(rows), encoding="utf-8")
    with pytest.raises(ImportRejected) as info:
        import_csv(src, tmp_path / "r.sqlite3")
    assert info.value.total == 80
    text = str(info.value)
    assert text.count("column dob:") == 50
    assert "... and 30 more problem(s) not shown" in text
    assert not (tmp_path / "r.sqlite3").exists()


def test_header_problems_name_the_columns(tmp_path: Path) -> None:
    header = [c for c in COLUMNS if c != "father_name"] + ["fathers_name"]
    rows = [[*r[:4], *r[5:], r[4]] for r in _rows(3)]
    src = tmp_path / "h.csv"
    src.write_text(_csv_text(rows, header), encoding="utf-8")
    with pytest.raises(ImportRejected) as info:
        import_csv(src, tmp_path / "r.sqlite3")
    text = str(info.value)
    assert "line 1, column father_name: required column is missing" in text
    assert "line 1, column fathers_name: unknown column" in text


def test_columns_in_another_order_are_accepted(tmp_path: Path) -> None:
    order = list(reversed(range(len(COLUMNS))))
    rows = [[r[i] for i in order] for r in _rows(5)]
    src = tmp_path / "o.csv"
    src.write_text(_csv_text(rows, [COLUMNS[i] for i in order]), encoding="utf-8")
    db = tmp_path / "r.sqlite3"
    import_csv(src, db)
    sheet = sample.candidate(SEED, 3)
    assert ResultStore(db).get(sheet.roll) == (sheet.dob.isoformat(), sheet.to_json())


def test_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    text = _csv_text(_rows(10)).replace("\n", "\r\n")
    src = tmp_path / "excel.csv"
    src.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    db = tmp_path / "r.sqlite3"
    assert import_csv(src, db).rows == 10
    sheet = sample.candidate(SEED, 9)
    assert ResultStore(db).get(sheet.roll) == (sheet.dob.isoformat(), sheet.to_json())


def test_names_in_indian_scripts_and_with_quotes_round_trip(tmp_path: Path) -> None:
    sheets = [sample.candidate(SEED, k) for k in range(3)]
    sheets[0] = replace(sheets[0], name="अनन्या शर्मा")
    sheets[1] = replace(sheets[1], name='RAVI "RAVI" KUMAR')
    sheets[2] = replace(sheets[2], school_name="ST. XAVIER'S, \\ KOLKATA\t")
    src = tmp_path / "u.csv"
    src.write_text(_csv_text([row_of(s) for s in sheets]), encoding="utf-8")
    db = tmp_path / "r.sqlite3"
    import_csv(src, db)
    store = ResultStore(db)
    for sheet in sheets:
        found = store.get(sheet.roll)
        assert found is not None
        assert found[1] == sheet.to_json()  # the fast path escapes exactly like json
        assert Marksheet.from_json(found[1]) == sheet


def test_non_utf8_bytes_are_rejected_with_their_line(tmp_path: Path) -> None:
    text = _csv_text(_rows(6)).encode("utf-8")
    lines = text.split(b"\n")
    lines[4] = lines[4].replace(b"CBSE", b"CBS\xe9", 1)  # Latin-1 e-acute on line 5
    src = tmp_path / "latin1.csv"
    src.write_bytes(b"\n".join(lines))
    with pytest.raises(ImportRejected) as info:
        import_csv(src, tmp_path / "r.sqlite3")
    assert info.value.total == 1
    problem = info.value.problems[0]
    assert (problem.line, problem.column) == (5, "exam")
    assert "not valid UTF-8" in problem.message
    assert "\\xe9" in problem.value


def test_empty_file_and_header_only_are_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ImportRejected, match="empty"):
        import_csv(empty, tmp_path / "r.sqlite3")
    header_only = tmp_path / "h.csv"
    header_only.write_text(_csv_text([]), encoding="utf-8")
    with pytest.raises(ImportRejected, match="no data rows"):
        import_csv(header_only, tmp_path / "r.sqlite3")


def test_parallel_and_serial_checking_agree(tmp_path: Path) -> None:
    rows = _rows(3000)
    rows[2500][_col("dob")] = "2008-13-01"
    rows[10][_col("sub1_total")] = "0"
    src = tmp_path / "p.csv"
    src.write_text(_csv_text(rows), encoding="utf-8")
    errors = []
    for workers in (0, 2):
        with pytest.raises(ImportRejected) as info:
            import_csv(src, tmp_path / "r.sqlite3", workers=workers)
        errors.append([(p.line, p.column) for p in info.value.problems])
    assert errors[0] == errors[1] == [(12, "sub1_total"), (2502, "dob")]


def test_killed_import_leaves_the_old_database_answering(good_db: Path, tmp_path: Path) -> None:
    before = _snapshot(good_db)
    big = tmp_path / "big.csv"
    sample.write_csv(big, 40_000, seed=5)
    proc = subprocess.Popen(
        [sys.executable, "-m", "waitroom", "lookup", "import", str(big), "--db", str(good_db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        pattern = ".results.sqlite3.import-*.tmp"
        while not list(tmp_path.glob(pattern)) and time.monotonic() < deadline:
            time.sleep(0.005)
        assert list(tmp_path.glob(pattern)), "the import never started writing"
        time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert _snapshot(good_db) == before
    # The next import clears the dead import's temp file and succeeds.
    src = tmp_path / "next.csv"
    src.write_text(_csv_text(_rows(5, seed=8)), encoding="utf-8")
    import_csv(src, good_db)
    assert not list(tmp_path.glob(pattern))
    assert len(_snapshot(good_db)) == 5
