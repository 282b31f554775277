"""One measured run of the load generator, and the CPU the servers under test used."""

from __future__ import annotations

import argparse

from stress.harness.cpu import CpuWindow
from stress.harness.loadgen import LoadResult, RequestFactory, run_in_process
from stress.harness.processes import HOST, LOADER_CORE


def measure_load(
    args: argparse.Namespace, port: int, factory: RequestFactory, watched: dict[str, int]
) -> tuple[LoadResult, CpuWindow]:
    """One run of the load generator on core 1 (``args``: connections, duration,
    warmup) and the CPU the ``watched`` processes used meanwhile."""
    # Sampled inside the loader's measured window (after its warm-up, before its
    # end), so start-up and tear-down do not dilute the shares.
    window = CpuWindow(watched, args.warmup + 0.3, max(0.5, args.duration - 0.6))
    window.start()
    result = run_in_process(
        HOST,
        port,
        factory,
        cpu=LOADER_CORE,
        connections=args.connections,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    window.join()
    return result, window
