"""``waitroom demo``: the whole product on one machine with nothing else installed.

Starts an embedded Redis, generates sample results and imports them through the
real CSV import path, then runs the lookup backend and the gateway (each in its own
process, as in production) with a low admission rate so the line is visible.
Ctrl-C stops everything.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from waitroom.embedded_redis import EmbeddedRedis
from waitroom.errors import WaitroomError
from waitroom.passwords import hash_password


def _waitroom(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "waitroom", *args], env=env)  # noqa: S603


def _check(*args: str) -> None:
    code = _waitroom(*args).wait()
    if code != 0:
        raise WaitroomError(f"`waitroom {' '.join(args)}` failed with exit code {code}")


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WaitroomError(f"process for {url} exited with {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=1) as answer,  # noqa: S310 - loopback
        ):
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise WaitroomError(f"{url} did not become healthy within {timeout:.0f}s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def prepare_data(data_dir: Path, students: int) -> Path:
    """Sample CSV and imported database, reused across runs of the same size."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = data_dir / f"results-{students}.sqlite3"
    if db.exists():
        print(f"waitroom demo: reusing {db}", file=sys.stderr)
        return db
    csv_path = data_dir / f"sample-{students}.csv"
    print(f"waitroom demo: generating {students:,} sample candidates", file=sys.stderr)
    _check("lookup", "sample", "--students", str(students), "--out", str(csv_path))
    _check("lookup", "import", str(csv_path), "--db", str(db))
    return db


def run(*, port: int, students: int, rate: float, data_dir: str) -> int:
    from lookup import sample

    db = prepare_data(Path(data_dir), students)
    # A fresh random password each run: the demo never has a known default.
    admin_password = secrets.token_urlsafe(12)
    backend_port = port + 1
    env = dict(os.environ)
    env.update(
        {
            "WAITROOM_MODE": "demo",
            "WAITROOM_SECRET_KEYS": secrets.token_urlsafe(32),
            "WAITROOM_BACKEND_SECRET": secrets.token_urlsafe(32),
            "WAITROOM_BACKEND_URL": f"http://127.0.0.1:{backend_port}",
            "WAITROOM_RATE": str(rate),
            "WAITROOM_ACTIVE_WINDOW_S": "30",
            "WAITROOM_ADMIN_PASSWORD_HASH": hash_password(admin_password),
        }
    )
    processes: list[subprocess.Popen[bytes]] = []
    # `kill` (SIGTERM) stops the demo as Ctrl-C does: children and Redis with it.
    signal.signal(signal.SIGTERM, _interrupt)
    with EmbeddedRedis() as redis_server:
        env["WAITROOM_REDIS_URL"] = redis_server.url
        try:
            backend = _waitroom(
                "lookup", "serve", "--db", str(db), "--port", str(backend_port), env=env
            )
            processes.append(backend)
            gateway = _waitroom("serve", "--port", str(port), env=env)
            processes.append(gateway)
            _wait_healthy(f"http://127.0.0.1:{backend_port}/healthz", backend)
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway)
            examples = [sample.candidate(sample.DEFAULT_SEED, k) for k in (0, 1, 2)]
            print(
                "\nwaitroom demo is running:\n"
                f"  students:        http://127.0.0.1:{port}/\n"
                f"  queue state:     http://127.0.0.1:{port}/queue/state\n"
                f"  admin:           http://127.0.0.1:{port}/admin  (password: "
                f"{admin_password})\n"
                f"  lookup backend:  http://127.0.0.1:{backend_port}/ (needs the "
                "gateway's admission header)\n"
                f"  redis:           {redis_server.url}\n"
                f"  admission rate:  {rate:g} per second (open several browsers to "
                "see the line)\n"
                "  try these candidates (roll number, date of birth):\n"
                + "".join(f"    {c.roll}  {c.dob.isoformat()}  {c.name}\n" for c in examples)
                + "Press Ctrl-C to stop.",
                file=sys.stderr,
                flush=True,
            )
            while all(p.poll() is None for p in processes):
                time.sleep(0.5)
            return 1  # a child died on its own
        except KeyboardInterrupt:
            return 0
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
