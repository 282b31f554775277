from __future__ import annotations

from pathlib import Path

import pytest

from lookup import sample
from lookup.store import ResultStore
from waitroom.cli import main


def test_sample_then_import(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, db = tmp_path / "s.csv", tmp_path / "r.sqlite3"
    assert main(["lookup", "sample", "--students", "120", "--out", str(out), "--seed", "4"]) == 0
    assert main(["lookup", "import", str(out), "--db", str(db)]) == 0
    assert "imported 120 results" in capsys.readouterr().out
    sheet = sample.candidate(4, 119)
    assert ResultStore(db).get(sheet.roll) == (sheet.dob.isoformat(), sheet.to_json())


def test_serve_refuses_without_a_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WAITROOM_BACKEND_SECRET", raising=False)
    out, db = tmp_path / "s.csv", tmp_path / "r.sqlite3"
    main(["lookup", "sample", "--students", "10", "--out", str(out)])
    main(["lookup", "import", str(out), "--db", str(db)])
    assert main(["lookup", "serve", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "WAITROOM_BACKEND_SECRET" in err and "--standalone" in err


def test_serve_refuses_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite3"
    assert main(["lookup", "serve", "--db", str(missing), "--standalone"]) == 2
    assert "waitroom lookup import" in capsys.readouterr().err


def test_import_of_a_missing_file_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["lookup", "import", str(tmp_path / "nope.csv"), "--db", str(tmp_path / "r")])
    assert code == 2
    assert "cannot read" in capsys.readouterr().err
