"""``waitroom demo``: the whole product on one machine with nothing else installed.

Starts an embedded Redis, generates sample results and imports them through the
real CSV import path, then runs the lookup backend and the gateway (each in its own
process, as in production) with a low admission rate so the line is visible.
``--crowd N`` adds a process of N simulated students who join, poll and look up
through the gateway's HTTP interface as browsers would, so a person opening a tab
sees a line that moves. Ctrl-C stops everything.

The demo supervises its children: one that dies (a crash, ``kill -9``) is started
again after a pause that doubles while it keeps dying young, and each is told by
the kernel to stop when the demo dies, however it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.errors import WaitroomError
from waitroom.gateway.upstream import Upstream, UpstreamError
from waitroom.lookup import sample
from waitroom.shared.passwords import hash_password
from waitroom.shared.processes import die_with_parent, wait_answering

_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 30.0
# A child that ran this long was healthy: its next death starts the backoff anew.
_HEALTHY_AFTER_S = 30.0
# The simulated students' addresses: RFC 2544's benchmarking range, never a real
# client, so each one counts as its own client for the per-client join limit.
_CROWD_NETWORK = "198.18"


def _start(argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    # The demo has no threads, so preexec_fn is safe here.
    return subprocess.Popen(argv, env=env, preexec_fn=die_with_parent)  # noqa: S603


def _waitroom(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return _start([sys.executable, "-m", "waitroom", *args], env)


def _check(*args: str) -> None:
    code = _waitroom(*args).wait()
    if code != 0:
        raise WaitroomError(f"`waitroom {' '.join(args)}` failed with exit code {code}")


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    def alive() -> None:
        if process.poll() is not None:
            raise WaitroomError(f"process for {url} exited with {process.returncode}")

    if not wait_answering(url, timeout, check=alive, every_s=0.2):
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


@dataclass
class _Child:
    """One supervised process of the demo."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    delay: float = _FIRST_DELAY_S
    restart_at: float | None = None

    def start(self) -> subprocess.Popen[bytes]:
        self.process = _start(self.argv, self.env)
        self.started = time.monotonic()
        self.restart_at = None
        return self.process

    def check(self) -> None:
        """Notice a death and schedule the restart; restart when it is due."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return
        if self.process is None or self.process.poll() is None:
            return
        if now - self.started >= _HEALTHY_AFTER_S:
            self.delay = _FIRST_DELAY_S
        print(
            f"waitroom demo: the {self.name} exited ({_describe(self.process.returncode)}); "
            f"restarting it in {self.delay:g} s",
            file=sys.stderr,
            flush=True,
        )
        self.restart_at = now + self.delay
        self.delay = min(self.delay * 2, _MAX_DELAY_S)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait(self) -> None:
        if self.process is None:
            return
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _describe(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"exit code {code}"


def banner(
    *,
    port: int,
    backend_port: int,
    admin_password: str,
    rate: float,
    crowd: int,
    redis_url: str,
) -> str:
    """What the demo prints once it runs: the pages a person opens come first."""
    gateway = f"http://127.0.0.1:{port}"
    examples = [sample.candidate(sample.DEFAULT_SEED, k) for k in (0, 1, 2)]
    if crowd:
        crowd_line = f"{crowd} simulated students kept in line (--crowd N to change)"
    else:
        crowd_line = "none (add --crowd 100 to see the line move)"
    return (
        "\nwaitroom demo is running. Open:\n"
        f"  waiting room:    {gateway}/\n"
        f"  admin:           {gateway}/admin  (password: {admin_password})\n"
        f"  admission rate:  {rate:g} per second (--rate N to change; the admin page "
        "changes it live)\n"
        f"  crowd:           {crowd_line}\n"
        f"  queue state:     {gateway}/queue/state (JSON)\n"
        "  try these candidates (roll number, date of birth):\n"
        + "".join(f"    {c.roll}  {c.dob.isoformat()}  {c.name}\n" for c in examples)
        + "Behind the gateway, not for a browser:\n"
        f"  lookup backend:  http://127.0.0.1:{backend_port}/ (refuses requests "
        "without the gateway's admission header)\n"
        f"  redis:           {redis_url}\n"
        "Press Ctrl-C to stop."
    )


def run(*, port: int, students: int, rate: float, data_dir: str, crowd: int = 0) -> int:
    if crowd < 0:
        raise WaitroomError(f"--crowd must be 0 or more, got {crowd}")
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
    if crowd:
        # The crowd names its simulated addresses in X-Forwarded-For from this
        # machine; a person's own tabs still count as 127.0.0.1.
        env["WAITROOM_TRUSTED_PROXIES"] = "127.0.0.1"
    children: list[_Child] = []
    # `kill` (SIGTERM) stops the demo as Ctrl-C does: children and Redis with it.
    signal.signal(signal.SIGTERM, _interrupt)
    with EmbeddedRedis() as redis_server:
        env["WAITROOM_REDIS_URL"] = redis_server.url
        try:
            command = [sys.executable, "-m", "waitroom"]
            serve_backend = ["lookup", "serve", "--db", str(db), "--port", str(backend_port)]
            backend = _Child("lookup backend", [*command, *serve_backend], env)
            gateway = _Child("gateway", [*command, "serve", "--port", str(port)], env)
            children += [backend, gateway]
            backend_process, gateway_process = backend.start(), gateway.start()
            _wait_healthy(f"http://127.0.0.1:{backend_port}/healthz", backend_process)
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway_process)
            if crowd:
                # Its own module, not a thread here: the demo stays single-threaded,
                # which keeps starting children with preexec_fn safe.
                argv = [
                    sys.executable,
                    "-m",
                    "waitroom.devtools.demo",
                    "crowd",
                    str(port),
                    str(crowd),
                ]
                children.append(_Child("simulated crowd", argv, env))
                children[-1].start()
            print(
                banner(
                    port=port,
                    backend_port=backend_port,
                    admin_password=admin_password,
                    rate=rate,
                    crowd=crowd,
                    redis_url=redis_server.url,
                ),
                file=sys.stderr,
                flush=True,
            )
            while True:
                time.sleep(0.5)
                for child in children:
                    child.check()
        except KeyboardInterrupt:
            return 0
        finally:
            for child in children:
                child.stop()
            for child in children:
                child.wait()


# -- the simulated crowd ---------------------------------------------------------------


async def simulate_crowd(base_url: str, size: int) -> None:
    """Keep about ``size`` simulated students in line at ``base_url``, forever.

    Each seat holds one student at a time: it joins, polls ``/status`` at the
    interval the gateway asks for, trades its ticket for a pass at the front, looks
    up one result, and leaves; the seat's next student then joins at the back.
    """
    client = Upstream(base_url, pool_size=min(size, 64), read_timeout_s=15)
    numbers = itertools.count(1)

    async def seat() -> None:
        # Arrivals spread over a few seconds, not one burst.
        await asyncio.sleep(random.uniform(0, max(1.0, size / 25)))
        while True:
            await _one_student(client, next(numbers))

    await asyncio.gather(*(seat() for _ in range(size)))


async def _one_student(client: Upstream, number: int) -> None:
    address = f"{_CROWD_NETWORK}.{(number >> 8) & 255}.{number & 255}".encode()
    jar: dict[str, str] = {}

    async def ask(method: str, path: str, body: bytes = b"") -> dict[str, object]:
        headers = [(b"accept", b"application/json"), (b"x-forwarded-for", address)]
        if jar:
            cookies = "; ".join(f"{k}={v}" for k, v in jar.items())
            headers.append((b"cookie", cookies.encode("latin-1")))
        if body:
            headers.append((b"content-type", b"application/json"))
        try:
            answer = await client.request(method, path, headers, body)
        except UpstreamError:
            return {"state": "unreachable", "retry_after_s": 2}
        for name, value in answer.headers:
            if name == b"set-cookie":
                key, _, kept = value.decode("latin-1").split(";")[0].partition("=")
                if kept:
                    jar[key.strip()] = kept.strip()
                else:
                    jar.pop(key.strip(), None)
        try:
            parsed = json.loads(answer.body)
        except ValueError:
            return {"state": "unreadable", "retry_after_s": 2}
        return parsed if isinstance(parsed, dict) else {"state": "unreadable"}

    answer = await ask("GET", "/")
    while answer.get("state") != "admitted":
        if answer.get("state") == "ready":
            answer = await ask("GET", "/")  # the first request at the front trades the ticket
            continue
        wait = answer.get("retry_after_s")
        delay = float(wait) if isinstance(wait, int | float) and wait > 0 else 2.0
        await asyncio.sleep(min(delay, 30.0) * random.uniform(0.8, 1.2))
        answer = await ask("GET", "/status" if "wr_ticket" in jar else "/")
    sheet = sample.candidate(sample.DEFAULT_SEED, number % 1000)
    form = {"roll": sheet.roll, "dob": sheet.dob.isoformat()}
    await ask("POST", "/api/result", json.dumps(form).encode())


def _crowd_main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] != "crowd":
        print("usage: python -m waitroom.devtools.demo crowd PORT SIZE", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(simulate_crowd(f"http://127.0.0.1:{int(argv[1])}", int(argv[2])))
    return 0


if __name__ == "__main__":
    sys.exit(_crowd_main(sys.argv[1:]))
