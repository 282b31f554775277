from __future__ import annotations

import csv
import hashlib
from collections import Counter
from pathlib import Path

from waitroom.lookup import sample
from waitroom.lookup.importing.csvformat import COLUMNS, row_of
from waitroom.lookup.marksheet import GRADES, MIN_SUBJECTS, PASS_MARK


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_byte_identical_file(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    sample.write_csv(a, 500, seed=11)
    sample.write_csv(b, 500, seed=11)
    sample.write_csv(c, 500, seed=12)
    assert _sha(a) == _sha(b)
    assert _sha(a) != _sha(c)


def test_rows_are_the_candidates_the_helper_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    sample.write_csv(path, 200, seed=3)
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS
    for k in (0, 1, 57, 199):
        sheet = sample.candidate(3, k)
        assert rows[k + 1] == row_of(sheet)
        assert sheet.roll == sample.roll_of(k)
        assert sample.index_of(sheet.roll) == k


def test_candidates_are_plausible() -> None:
    results: Counter[str] = Counter()
    for k in range(4000):
        m = sample.candidate(5, k)
        results[m.result] += 1
        assert 5 <= len(m.subjects) <= 6 >= MIN_SUBJECTS
        assert m.subjects[0].name == "ENGLISH CORE"
        assert len({s.code for s in m.subjects}) == len(m.subjects)
        assert 2006 <= m.dob.year <= 2009
        assert m.name.split()[-1] == m.father_name.split()[-1]
        fails = 0
        for s in m.subjects:
            if m.result == "ABSENT":
                assert s.total is None and s.grade is None
                continue
            assert s.theory is not None and s.practical is not None and s.total is not None
            assert s.theory + s.practical == s.total <= 100
            assert s.grade in GRADES
            fails += s.total < PASS_MARK
        expected = {0: "PASS", 1: "COMPARTMENT"}.get(fails, "ESSENTIAL REPEAT")
        if m.result != "ABSENT":
            assert m.result == expected
    share = {r: n / 4000 for r, n in results.items()}
    assert 0.84 < share["PASS"] < 0.93
    assert 0.05 < share["COMPARTMENT"] < 0.12
    assert 0.005 < share["ESSENTIAL REPEAT"] < 0.04
    assert 0.002 < share["ABSENT"] < 0.02
