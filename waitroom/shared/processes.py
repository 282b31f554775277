"""Child processes that do not outlive their parent, and waiting for a child server."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no-op elsewhere).

    Called in a child (a ``preexec_fn`` or a pool initializer): a parent killed with
    SIGKILL runs no cleanup, and without this its children would run on as orphans.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_group(process: subprocess.Popen[Any], grace_s: float = 10) -> None:
    """Stop a child started with ``start_new_session=True``, and its whole group.

    SIGTERM first; SIGKILL for what is left after ``grace_s``, and for the group
    in any case: a server's worker that outlived its parent would keep its port.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the kernel's pick).

    Free when asked, not reserved: a server started on it may still lose it to
    another process in between, which on a busy machine shows as a port clash.
    """
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_answering(
    url: str,
    timeout: float = 30,
    *,
    check: Callable[[], None] | None = None,
    every_s: float = 0.1,
) -> bool:
    """Whether ``url`` answered 200 within ``timeout`` seconds, asked every ``every_s``.

    ``check`` runs before each try and may raise: a child server that exited will
    never answer, and its caller should say why at once rather than at the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(url, timeout=min(2.0, timeout)) as answer,  # noqa: S310
        ):
            if answer.status == 200:
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
