"""Running an ASGI app (the gateway or the lookup backend) on a production server.

Hypercorn is the default; granian is the optional extra for operators who want the
most throughput (``pip install 'waitroom[granian]'``). Both get a listen backlog
sized for a spike: Hypercorn's default of 100 overflowed at 1,000 simultaneous
connections on a 2-core machine and those clients saw timeouts. The app is named
by import path ("module:attribute") so every worker process imports its own copy;
settings reach the workers through ``WAITROOM_*`` environment variables.

Workers are supervised here, not by Hypercorn's own loop: Hypercorn stops the whole
server when one worker dies with an error, so a worker killed by the OOM killer or
a stray ``kill -9`` took every other worker down with it. Here a dead worker is
replaced (after 0.5 s, doubling up to 30 s while workers keep dying young, logged
each time), and every worker asks Linux to end it when the supervisor dies, so a
supervisor killed with SIGKILL leaves no worker holding the port. granian runs its
own supervisor, told to respawn failed workers; its workers get the same
parent-death signal from the app factory wrapper below.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event as EventType
from typing import Any

from waitroom.errors import ConfigError
from waitroom.shared.processes import die_with_parent

SERVERS = ("hypercorn", "granian")
log = logging.getLogger(__name__)

_FIRST_DELAY_S = 0.5
_MAX_DELAY_S = 30.0
# A worker that lived this long was healthy: the next death starts the backoff anew.
_HEALTHY_AFTER_S = 30.0
# Where granian's workers find the real app (they import the wrapper instead).
_ENV_TARGET = "WAITROOM_SERVER_TARGET"
_ENV_FACTORY = "WAITROOM_SERVER_FACTORY"
_ENV_PARENT = "WAITROOM_SERVER_PARENT_PID"


def run(
    target: str,
    *,
    host: str,
    port: int,
    workers: int = 1,
    backlog: int = 2048,
    server: str = "hypercorn",
    factory: bool = False,
) -> int:
    """Serve ``target`` ("module:attribute"; with ``factory``, a function to call)."""
    if server == "granian":
        return _run_granian(target, host, port, workers, backlog, factory)
    if server != "hypercorn":
        raise ConfigError("--server", server, f"must be one of {', '.join(SERVERS)}")
    from hypercorn.config import Config

    config = Config()
    config.application_path = target + "()" if factory else target
    config.bind = [f"{host}:{port}"]
    config.workers = workers
    config.backlog = backlog
    # uvloop spreads connections evenly over workers; asyncio let one take them all.
    config.worker_class = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    config.accesslog = None
    config.errorlog = "-"
    # Phones on slow networks reuse a connection across polls seconds apart.
    config.keep_alive_timeout = 30
    config.graceful_timeout = 5
    # Every header costs Hypercorn about 8 µs an answer (measured), and naming the
    # server to every client helps only whoever scans for its weaknesses.
    config.include_server_header = False
    return _supervise(config)


def _supervise(config: Any) -> int:
    """Hypercorn's multi-worker loop, but a dead worker is replaced, not fatal."""
    if config.workers < 1:
        from hypercorn.run import run as hypercorn_run

        result: int = hypercorn_run(config)
        return result
    sockets = config.create_sockets()
    context = multiprocessing.get_context("spawn")
    shutdown = context.Event()
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()
        shutdown.set()

    # Workers inherit an ignored SIGINT: Ctrl-C reaches the whole terminal group, and
    # only the supervisor decides how the workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    workers: dict[int, tuple[BaseProcess, float]] = {}

    def spawn(slot: int) -> None:
        process = context.Process(
            target=_hypercorn_worker,
            args=(config, sockets, shutdown, os.getpid()),
            name=f"waitroom-worker-{slot}",
        )
        process.start()
        workers[slot] = (process, time.monotonic())

    for slot in range(config.workers):
        spawn(slot)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    delay = _FIRST_DELAY_S
    try:
        while not stopping.is_set():
            sentinels = [process.sentinel for process, _ in workers.values()]
            multiprocessing.connection.wait(sentinels, timeout=1)
            for slot, (process, born) in list(workers.items()):
                if process.exitcode is None or stopping.is_set():
                    continue
                process.join()
                if time.monotonic() - born >= _HEALTHY_AFTER_S:
                    delay = _FIRST_DELAY_S
                log.warning(
                    "worker %d (pid %s) exited with %s; starting a new one in %.1f s",
                    slot,
                    process.pid,
                    _describe(process.exitcode),
                    delay,
                )
                if stopping.wait(delay):
                    break
                spawn(slot)
                delay = min(delay * 2, _MAX_DELAY_S)
    finally:
        shutdown.set()
        deadline = time.monotonic() + config.graceful_timeout + 2
        for process, _ in workers.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process, _ in workers.values():
            if process.exitcode is None:
                process.kill()
                process.join()
        for sock in sockets.secure_sockets + sockets.insecure_sockets:
            sock.close()
    return 0


def _describe(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-exitcode).name}"
    return f"code {exitcode}"


def _orphan_check(parent_pid: int) -> None:
    """End this worker with its parent, even if the parent is already gone."""
    die_with_parent()
    # The parent may have died between our start and the prctl: then nothing
    # would ever signal us, and we are the orphan the signal was meant to end.
    if os.getppid() != parent_pid:
        os._exit(1)


def _hypercorn_worker(config: Any, sockets: Any, shutdown: EventType, parent_pid: int) -> None:
    _orphan_check(parent_pid)
    if config.worker_class == "uvloop":
        from hypercorn.asyncio.run import uvloop_worker as worker
    else:
        from hypercorn.asyncio.run import asyncio_worker as worker
    worker(config=config, sockets=sockets, shutdown_event=shutdown)


def granian_worker_app() -> Any:
    """The app factory granian's workers call: the real app, bound to the parent."""
    _orphan_check(int(os.environ[_ENV_PARENT]))
    module_name, _, attribute = os.environ[_ENV_TARGET].partition(":")
    app = getattr(importlib.import_module(module_name), attribute)
    return app() if os.environ.get(_ENV_FACTORY) == "1" else app


def _open_files_limit() -> int:
    """As many connections as this process may open, raised to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return max(1024, min(soft if soft != resource.RLIM_INFINITY else 65536, 1 << 20))


def _run_granian(
    target: str, host: str, port: int, workers: int, backlog: int, factory: bool
) -> int:
    try:
        from granian import Granian
        from granian.constants import Interfaces
    except ImportError as exc:
        raise ConfigError(
            "--server", "granian", "granian is not installed: pip install 'waitroom[granian]'"
        ) from exc
    os.environ[_ENV_TARGET] = target
    os.environ[_ENV_FACTORY] = "1" if factory else "0"
    os.environ[_ENV_PARENT] = str(os.getpid())
    Granian(
        "waitroom.shared.server:granian_worker_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        backlog=backlog,
        # granian's default (backlog / workers) caps the connections a worker holds
        # open, idle keep-alive ones included: with 2 workers, the 2,049th student in
        # line was not answered until someone left (measured), and the seed scenario
        # failed 2.5 % of its requests at 14,000 users. A waiting student holds one
        # connection for as long as they wait, so the cap is what the process may
        # open (each connection costs a few KB).
        backpressure=_open_files_limit(),
        factory=True,
        log_access=False,
        # granian gives up after two deaths of one worker within 5.5 s; a caller
        # that must stay up (the demo) restarts the whole server then.
        respawn_failed_workers=True,
        # Without it granian waits forever for a worker that does not stop: seen
        # once in a few dozen stops in the suite (a worker that ignored SIGTERM),
        # which left the server up past its caller's patience. Stuck workers are
        # killed after this many seconds; Hypercorn's graceful_timeout does the same.
        workers_kill_timeout=10,
    ).serve()
    return 0
