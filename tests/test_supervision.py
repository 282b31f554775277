"""Supervised processes, with real processes and real signals.

A server's worker killed with SIGKILL is replaced and the server keeps answering; a
server (or the demo) killed with SIGKILL leaves no process behind; the demo restarts
a child that died, and its crowd keeps a moving line in front of the gateway.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lookup import importer, sample
from tests.servers import free_port

SECRET = "supervision-test-backend-secret-0123"


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    env.update(extra)
    return env


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (in parentheses) may hold spaces; the fields after it do not.
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] == "Z" else int(fields[1])


def _alive(pid: int) -> bool:
    return _ppid(pid) is not None  # gone, or a zombie nobody reaped: dead either way


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ppid(int(entry.name)) == pid:
            found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


def _until(what: str, check: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:.0f}s: {what}")


def _worker(parent: int) -> int | None:
    """The server's worker: its child that is not multiprocessing's resource tracker."""
    workers = [c for c in _children(parent) if "resource_tracker" not in _cmdline(c)]
    return workers[0] if len(workers) == 1 else None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback
            return bool(answer.status == 200)
    except OSError:
        return False


def _refused(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) != 0


@contextlib.contextmanager
def _session(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A process in its own session; whatever is left of the session dies at the end."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            process.wait(10)


@pytest.fixture(scope="module")
def small_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("supervision")
    importer.import_csv(_sample(folder / "s.csv"), folder / "r.sqlite3")
    return folder / "r.sqlite3"


def _sample(path: Path) -> Path:
    sample.write_csv(path, 50)
    return path


@pytest.mark.timeout(90)
@pytest.mark.parametrize("server", ["hypercorn", "granian"])
def test_a_killed_worker_is_replaced_and_a_killed_server_leaves_no_worker(
    small_db: Path, tmp_path: Path, server: str
) -> None:
    port = free_port()
    health = f"http://127.0.0.1:{port}/healthz"
    argv = [sys.executable, "-m", "waitroom", "lookup", "serve", "--db", str(small_db)]
    argv += ["--port", str(port), "--server", server]
    log = tmp_path / "serve.log"
    with _session(argv, _clean_env(WAITROOM_BACKEND_SECRET=SECRET), log) as parent:
        _until("the backend answers", lambda: _answers(health))
        first = _until("one worker", lambda: _worker(parent.pid))

        os.kill(first, signal.SIGKILL)
        # Before: Hypercorn stopped the whole server when a worker died.
        second = _until("a new worker", lambda: (w := _worker(parent.pid)) != first and w)
        _until("the backend answers again", lambda: _answers(health))
        assert parent.poll() is None
        if server == "hypercorn":
            assert "exited with signal SIGKILL; starting a new one" in log.read_text()

        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        # Before: the worker served on as an orphan, holding the port.
        _until("the orphaned worker is gone", lambda: not _alive(second))
        _until("nothing listens", lambda: _refused(port))
