"""Supervised processes, with real processes and real signals.

A server's worker killed with SIGKILL is replaced and the server keeps answering; a
server (or the demo) killed with SIGKILL leaves no process behind; the demo restarts
a child that died, and its crowd keeps a moving line in front of the gateway.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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

from waitroom.lookup import sample
from waitroom.lookup.importing import importer
from waitroom.shared.processes import free_port

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


def _demo_ports() -> int:
    """A port whose next one is free too: the demo's backend listens on port + 1."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two free ports in a row")


@contextlib.contextmanager
def _demo(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    port = _demo_ports()
    argv = [sys.executable, "-m", "waitroom", "demo", "--port", str(port)]
    argv += ["--students", "200", "--data-dir", str(tmp_path / "data"), *options]
    log = tmp_path / "demo.log"
    with _session(argv, _clean_env(), log) as demo:
        _until(
            "the demo's banner",
            lambda: "Press Ctrl-C" in log.read_text() or demo.poll() is not None,
            timeout=40,
        )
        assert demo.poll() is None, log.read_text()
        yield demo, port, log


def _state(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/queue/state", timeout=2) as r:
        body: dict[str, Any] = json.loads(r.read())
        return body


@pytest.mark.timeout(120)
def test_the_demo_banner_leads_with_the_gateway_and_the_crowd_keeps_a_moving_line(
    tmp_path: Path,
) -> None:
    with _demo(tmp_path, "--crowd", "30", "--rate", "4") as (_, port, log):
        text = log.read_text()
        banner = text[text.index("waitroom demo is running") :]
        urls = re.findall(r"http://127\.0\.0\.1:(\d+)(\S*)", banner)
        # A browser opening the first address shown gets the waiting room, not the
        # backend's 403; the admin page and its password come next.
        assert urls[0] == (str(port), "/"), banner
        assert urls[1] == (str(port), "/admin"), banner
        assert re.search(r"/admin\s+\(password: \S{12,}\)", banner), banner
        assert "4 per second (--rate N" in banner
        assert "30 simulated students" in banner
        backend_line = next(line for line in banner.splitlines() if f":{port + 1}" in line)
        assert banner.index(backend_line) > banner.index("Behind the gateway")

        samples = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            state = _state(port)
            samples.append((state["frontier"], state["waiting"]))
            moved = samples[-1][0] - samples[0][0]
            if len(samples) >= 10 and moved >= 12 and min(w for _, w in samples[-10:]) >= 12:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"no moving line of about 30: {samples}")
        # The crowd looks results up too, so the admin page's backend figures move.
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            metrics = r.read().decode()
        looked_up = re.search(r"^waitroom_backend_requests_total (\S+)$", metrics, re.M)
        assert looked_up is not None and float(looked_up.group(1)) >= 1, metrics[:2000]


def test_the_demo_without_a_crowd_says_how_to_get_one(tmp_path: Path) -> None:
    with _demo(tmp_path) as (_, port, log):
        assert "--crowd 100" in log.read_text()
        assert _state(port)["waiting"] == 0


@pytest.mark.timeout(120)
def test_the_demo_restarts_killed_children_and_dies_whole(tmp_path: Path) -> None:
    with _demo(tmp_path, "--crowd", "5") as (demo, port, log):
        health = f"http://127.0.0.1:{port + 1}/healthz"

        def backend() -> int | None:
            found = [c for c in _children(demo.pid) if "lookup serve" in _cmdline(c)]
            return found[0] if len(found) == 1 else None

        server = _until("the backend server", backend)
        worker = _until("its worker", lambda: _worker(server))
        os.kill(worker, signal.SIGKILL)
        # Before: the backend's server exited with its worker, and the demo with it.
        _until("a new backend worker", lambda: _worker(server) not in (None, worker))
        _until("the backend answers again", lambda: _answers(health))
        assert demo.poll() is None

        worker = _until("its worker", lambda: _worker(server))
        os.kill(server, signal.SIGKILL)
        restarted = _until("a new backend server", lambda: (s := backend()) != server and s)
        _until("the old worker is gone", lambda: not _alive(worker))
        _until("the backend answers again", lambda: _answers(health))
        assert "the lookup backend exited (signal SIGKILL); restarting it" in log.read_text()
        assert restarted != server and demo.poll() is None

        family = _descendants(demo.pid)
        assert len(family) >= 7, family  # redis, 2 servers + workers + trackers, crowd
        os.kill(demo.pid, signal.SIGKILL)
        demo.wait(10)
        _until(
            "every process the demo started is gone",
            lambda: not [p for p in family if _alive(p)],
        )
        _until("the gateway is closed", lambda: _refused(port))
