from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from waitroom.cli import main
from waitroom.lookup import sample
from waitroom.lookup.store import ResultStore


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


@pytest.fixture
def db(tmp_path: Path) -> Path:
    out, db = tmp_path / "s.csv", tmp_path / "r.sqlite3"
    main(["lookup", "sample", "--students", "10", "--out", str(out)])
    main(["lookup", "import", str(out), "--db", str(db)])
    return db


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("WAITROOM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_serve_refuses_a_secret_on_the_command_line_in_production(
    db: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = secrets.token_urlsafe(32)
    assert main(["lookup", "serve", "--db", str(db), "--secret", key]) == 2
    err = capsys.readouterr().err
    assert "--secret" in err and "`ps`" in err and "--secret-file" in err
    assert key not in err


@pytest.mark.parametrize("weak", ["x", "aaaaaaaaaaaaaaaa", "change-me"])
def test_serve_refuses_a_weak_secret_in_production(
    db: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], weak: str
) -> None:
    clean_env.setenv("WAITROOM_BACKEND_SECRET", weak)
    assert main(["lookup", "serve", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "WAITROOM_BACKEND_SECRET" in err and "secrets.token_urlsafe(32)" in err
    assert repr(weak) not in err


def test_serve_refuses_the_gateways_own_key(
    db: Path,
    clean_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    shared = secrets.token_urlsafe(32)
    (tmp_path / "gateway-keys").write_text(f"{secrets.token_urlsafe(32)}\n{shared}\n")
    clean_env.setenv("WAITROOM_SECRET_KEYS_FILE", str(tmp_path / "gateway-keys"))
    clean_env.setenv("WAITROOM_BACKEND_SECRET", shared)
    assert main(["lookup", "serve", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "WAITROOM_BACKEND_SECRET" in err and "of its own" in err and shared not in err


def test_serve_names_an_unreadable_secret_file(
    db: Path, clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "nope"
    assert main(["lookup", "serve", "--db", str(db), "--secret-file", str(missing)]) == 2
    assert f"--secret-file={str(missing)!r}: cannot read" in capsys.readouterr().err


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


@pytest.mark.parametrize("server", ["hypercorn", "granian"])
def test_serve_runs_workers_and_checks_admission(tmp_path: Path, server: str) -> None:
    import contextlib
    import json
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from waitroom.shared.admission import HEADER, AdmissionSigner
    from waitroom.shared.processes import free_port

    out, db = tmp_path / "s.csv", tmp_path / "r.sqlite3"
    assert main(["lookup", "sample", "--students", "50", "--out", str(out)]) == 0
    assert main(["lookup", "import", str(out), "--db", str(db)]) == 0
    port, secret = free_port(), secrets.token_urlsafe(32)
    key_file = tmp_path / "backend-key"
    key_file.write_text(secret + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    command = [
        sys.executable,
        "-m",
        "waitroom",
        "lookup",
        "serve",
        "--db",
        str(db),
        "--port",
        str(port),
        "--server",
        server,
        "--workers",
        "2",
        "--secret-file",
        str(key_file),
    ]
    # Its own process group: whatever happens, its workers are stopped with it.
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    sheet = sample.candidate(sample.DEFAULT_SEED, 7)
    body = json.dumps({"roll": sheet.roll, "dob": sheet.dob.isoformat()}).encode()
    url = f"http://127.0.0.1:{port}/api/result"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "backend did not start"
                time.sleep(0.2)
        unsigned = urllib.request.Request(url, body, {"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned, timeout=5)  # noqa: S310 - loopback
        assert refused.value.code == 403
        refused.value.close()
        token = AdmissionSigner([secret]).sign("results", "p")
        signed = urllib.request.Request(
            url, body, {"Content-Type": "application/json", HEADER: token}
        )
        with urllib.request.urlopen(signed, timeout=5) as answer:  # noqa: S310 - loopback
            assert json.loads(answer.read())["name"] == sheet.name
    finally:
        process.terminate()
        try:
            _, stderr = process.communicate(timeout=20)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
    assert b"Traceback" not in stderr
