"""The servers a stress run starts: each logged, perhaps pinned, and always stopped.

Every scenario and bench starts its servers under test as child processes (the
real CLI, ``python -m waitroom ...``, or a yardstick app), and every one of them
used to do it its own way. :class:`Processes` is the one way: each child runs
from the repository root with its output in ``<logdir>/<name>.log``, in a process
group of its own (so stopping it reaches the workers it spawned), dies with this
process (``die_with_parent``), and may be pinned to one core before it execs
(so its workers and threads inherit the core). A child that exits early is named
with its log's tail.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from stress.harness.paths import REPO
from waitroom.shared.processes import die_with_parent, stop_group, wait_answering

HOST = "127.0.0.1"
# With two cores: the servers under test on one, the load generator on the other.
SERVER_CORE = 0
LOADER_CORE = 1


def pinning_possible() -> bool:
    """Whether the servers and the load generator can each have a core of their own."""
    cores = os.sched_getaffinity(0)
    return len(cores) >= 2 and SERVER_CORE in cores


@contextlib.contextmanager
def pinned(cores: set[int]) -> Iterator[None]:
    """This process on ``cores`` for a while (nothing changes for an empty set)."""
    before = os.sched_getaffinity(0)
    if cores:
        os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Processes:
    """Every child a run starts, so that each is stopped whatever happens."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self, name: str, args: list[str], env: dict[str, str], core: int | None = None
    ) -> int:
        """Start ``python <args>`` (pinned to ``core`` when given); returns its pid."""

        def prepare() -> None:
            die_with_parent()
            if core is not None:
                os.sched_setaffinity(0, {core})

        with (self.logdir / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=prepare,
                start_new_session=True,
            )
        self.running.append((name, proc))
        return proc.pid

    def check_alive(self, pid: int | None = None) -> None:
        """Raise, naming it and its log, if the child ``pid`` (any, without one) exited."""
        for name, proc in self.running:
            if (pid is None or proc.pid == pid) and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log_tail(name)}")

    def wait_ready(
        self, pid: int | None, port: int, path: str, timeout: float = 30, host: str = HOST
    ) -> None:
        """Until ``http://host:port/path`` answers 200; raises if the child (``pid``, or
        any of them) exits first or it does not answer within ``timeout`` seconds."""
        url = f"http://{host}:{port}{path}"
        if not wait_answering(url, timeout, check=lambda: self.check_alive(pid)):
            raise RuntimeError(f"{url} not ready within {timeout:.0f} s")

    def log_tail(self, name: str, chars: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.logdir / f"{name}.log").read_text(errors="replace")[-chars:]
        return "(no log)"

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.running}

    def stop(self, pid: int, grace_s: float = 10) -> None:
        for entry in list(self.running):
            if entry[1].pid == pid:
                self.running.remove(entry)
                stop_group(entry[1], grace_s=grace_s)

    def stop_all(self, grace_s: float = 10) -> None:
        """Every child still running, the last started first."""
        for _, proc in reversed(list(self.running)):
            self.stop(proc.pid, grace_s)
