"""What the processes under test and the machine's cores spent, read from /proc.

A figure taken while another process shared the server's core is low, and one
taken while the load generator saturated its own core is a floor: the benches
measure both beside every run (:class:`CpuWindow`) and wait for a quiet machine
before they start (:func:`wait_quiet`). Linux only.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from stress.harness.processes import SERVER_CORE

# Busy share of a core below which the machine counts as quiet before a run.
QUIET = 0.15


def process_tree(pid: int) -> Iterator[int]:
    """A process and all its descendants (those that have not exited meanwhile)."""
    todo = [pid]
    while todo:
        current = todo.pop()
        yield current
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]


def tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and all its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for current in process_tree(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{current}/stat").read_text()
            # Fields after the parenthesised command name; utime and stime are 14, 15.
            fields = stat[stat.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, MB."""
    total = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def core_jiffies() -> dict[int, tuple[int, int]]:
    """(busy, total) clock ticks per core since boot, from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            # user nice system idle iowait irq softirq steal: idle and iowait are not busy
            ticks = [int(v) for v in values[:8]]
            out[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return out


class CpuWindow(threading.Thread):
    """CPU shares (of one core) of the servers under test and of each core, over a window.

    The share of the server core that the watched processes do not account for is
    someone else's: another benchmark on this machine makes every figure low.
    """

    def __init__(self, watched: dict[str, int], start_after_s: float, length_s: float) -> None:
        super().__init__(daemon=True)
        self.watched = watched
        self.start_after_s = start_after_s
        self.length_s = length_s
        self.shares: dict[str, float] = {}
        self.core_busy: dict[int, float] = {}
        self.foreign_on_server_core = 0.0

    def run(self) -> None:
        time.sleep(self.start_after_s)
        cpu0 = {name: tree_cpu_s(pid) for name, pid in self.watched.items()}
        cores0 = core_jiffies()
        started = time.perf_counter()
        time.sleep(self.length_s)
        cpu1 = {name: tree_cpu_s(pid) for name, pid in self.watched.items()}
        cores1 = core_jiffies()
        wall = time.perf_counter() - started
        self.shares = {name: (cpu1[name] - cpu0[name]) / wall for name in self.watched}
        for core, (busy, total) in cores1.items():
            busy0, total0 = cores0.get(core, (busy, total))
            self.core_busy[core] = (busy - busy0) / max(1, total - total0)
        on_server_core = sum(
            share
            for name, share in self.shares.items()
            if core_of(self.watched[name]) == SERVER_CORE
        )
        self.foreign_on_server_core = max(
            0.0, self.core_busy.get(SERVER_CORE, 0.0) - on_server_core
        )


def core_of(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        cores = os.sched_getaffinity(pid)
        if len(cores) == 1:
            return next(iter(cores))
    return None


def wait_quiet(limit_s: float) -> float:
    """Wait (up to ``limit_s``) for both cores to idle; returns the last busy share seen.

    Another benchmark running at the same time takes half a core from the server
    under test and halves its figures.
    """
    deadline = time.monotonic() + limit_s
    quiet_in_a_row = 0
    busiest = 1.0
    while True:
        before = core_jiffies()
        time.sleep(1.0)
        after = core_jiffies()
        busiest = max(
            (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1]) for c in after
        )
        quiet_in_a_row = quiet_in_a_row + 1 if busiest < QUIET else 0
        if quiet_in_a_row >= 2 or time.monotonic() >= deadline:
            return busiest
