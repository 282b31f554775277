"""The systems under test, started by the scenario itself as ``waitroom demo`` does.

``Stack(db, waitroom=True)`` runs an embedded Redis, the lookup backend and the
gateway, each server in its own process through the real CLI; ``waitroom=False``
runs the lookup backend alone in standalone mode (the result site without a waiting
room). With ``capacity`` the backend is the legacy origin (``waitroom lookup serve
--capacity``, ``waitroom/lookup/capacity.py``): a result site of fixed size that fails as
real ones do, whose own counters :meth:`Stack.origin_counters` reads. Every
process is stopped on exit, its workers too (own process group), and dies with this
one. With ``pin`` the servers share core 0 and the caller keeps the other cores for
the load generator.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from stress.harness.paths import CACHE
from stress.harness.processes import HOST, SERVER_CORE, Processes, pinning_possible
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.lookup import sample
from waitroom.lookup.importing.importer import import_csv
from waitroom.shared.processes import free_port


@dataclass(frozen=True)
class Target:
    """A system under test, as the crowd and the analysis address it."""

    name: str  # "waitroom" or "direct"
    host: str
    port: int
    redis_url: str | None = None
    room: str = "results"
    rate: float | None = None  # configured admissions per second


def sample_db(students: int, seed: int = sample.DEFAULT_SEED, cache: Path = CACHE) -> Path:
    """A results database of ``students`` sample candidates, built once and cached."""
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"stress-results-{students}-seed{seed}.sqlite3"
    if not db.exists():
        started = time.perf_counter()
        csv_path = cache / f"stress-sample-{students}-seed{seed}.csv"
        sample.write_csv(csv_path, students, seed)
        import_csv(csv_path, db)
        csv_path.unlink()
        took = time.perf_counter() - started
        print(f"results: {students:,} sample candidates in {took:.1f} s", file=sys.stderr)
    return db


class Stack:
    def __init__(
        self,
        db: Path,
        *,
        waitroom: bool,
        rate: float | str = 100.0,
        capacity: float | None = None,
        gateway_workers: int = 1,
        backend_workers: int = 1,
        server: str = "hypercorn",
        pin: bool = False,
        active_window_s: int = 60,
    ) -> None:
        self.db = db
        self.waitroom = waitroom
        self.rate = rate
        self.capacity = capacity
        self.gateway_workers = gateway_workers
        self.backend_workers = backend_workers
        self.server = server
        self.pin = pin and pinning_possible()
        self.active_window_s = active_window_s
        self._redis: EmbeddedRedis | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="waitroom-stress-")
        self.logs = Path(self._tmp.name)
        self._procs = Processes(self.logs)
        self.target: Target | None = None
        self.backend_port: int | None = None

    def __enter__(self) -> Target:
        try:
            return self._start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> Target:
        backend_secret = secrets.token_urlsafe(32)
        env = {**os.environ, "WAITROOM_BACKEND_SECRET": backend_secret}
        backend_port = self.backend_port = free_port()
        self._spawn("backend", self.backend_args(backend_port), env)
        self._wait(backend_port, "/healthz")
        if not self.waitroom:
            self.target = Target("direct", HOST, backend_port)
            return self.target
        self._redis = EmbeddedRedis().start()
        port = free_port()
        env.update(
            {
                "WAITROOM_MODE": "test",
                "WAITROOM_SECRET_KEYS": secrets.token_urlsafe(32),
                "WAITROOM_REDIS_URL": self._redis.url,
                "WAITROOM_BACKEND_URL": f"http://{HOST}:{backend_port}",
                "WAITROOM_ACTIVE_WINDOW_S": str(self.active_window_s),
                # The load generator stands in for the CDN in front: it names each
                # student's address in X-Forwarded-For, so the per-client join
                # limit counts students, as in production, not the one loader.
                "WAITROOM_TRUSTED_PROXIES": f"{HOST}/32",
            }
        )
        self._spawn("gateway", self.gateway_args(port), env)
        self._wait(port, "/readyz")
        configured = self.rate if isinstance(self.rate, float | int) else None
        self.target = Target("waitroom", HOST, port, self._redis.url, "results", configured)
        return self.target

    def backend_args(self, port: int) -> list[str]:
        """``waitroom lookup serve``'s arguments: the legacy origin with a capacity."""
        args = ["lookup", "serve", "--db", str(self.db), "--port", str(port)]
        args += ["--workers", str(self.backend_workers), "--server", self.server]
        if self.capacity is not None:
            args += ["--capacity", f"{self.capacity:g}"]
        if not self.waitroom:
            args.append("--standalone")
        return args

    def gateway_args(self, port: int) -> list[str]:
        """``waitroom serve``'s arguments; the rate is passed on as given."""
        # The cap must not bind before the rate: an admission counts for the window.
        # A rate the gateway works out itself (not a number) is at most the origin's.
        rate = self.rate if isinstance(self.rate, float | int) else (self.capacity or 200.0)
        max_active = max(500, math.ceil(rate * self.active_window_s * 1.5))
        given = f"{self.rate:g}" if isinstance(self.rate, float | int) else self.rate
        args = ["serve", "--port", str(port), "--rate", given]
        args += ["--max-active", str(max_active), "--workers", str(self.gateway_workers)]
        return [*args, "--server", self.server]

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self._procs.start(name, ["-m", "waitroom", *args], env, SERVER_CORE if self.pin else None)

    def _wait(self, port: int, path: str, timeout: float = 60) -> None:
        self._procs.wait_ready(None, port, path, timeout)

    def origin_counters(self) -> dict[str, object] | None:
        """What the legacy origin says it answered; None for the lean backend."""
        if self.capacity is None or self.backend_port is None:
            return None
        url = f"http://{HOST}:{self.backend_port}/_origin/counters"
        with urllib.request.urlopen(url, timeout=10) as answer:
            counters: dict[str, object] = json.loads(answer.read())
            return counters

    def log(self, name: str) -> str:
        return self._procs.log_tail(name)

    def pids(self) -> dict[str, int]:
        return self._procs.pids()

    def close(self) -> None:
        self._procs.stop_all()
        if self._redis is not None:
            self._redis.close()
            self._redis = None
        self._tmp.cleanup()
