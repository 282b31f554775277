"""Gateways as separate processes, as nodes are in production, for the fault tests.

``waitroom serve`` runs a node exactly as an operator does. ``python -m
tests.support.gateway_processes OFFSET_S PORT`` runs one whose wall clock is OFFSET_S seconds
off (a node with a skewed clock): ``time.time`` is moved before waitroom is imported,
so tickets, passes and itsdangerous' timestamps all see the skewed clock, while Redis
(and so admission, which uses Redis TIME) is the real shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from tests.support.gateway_support import BACKEND_KEYS, TEST_KEYS
from waitroom.shared.processes import wait_answering


def node_env(redis_url: str, backend_url: str, **settings: object) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    env.update(
        WAITROOM_MODE="test",
        WAITROOM_SECRET_KEYS=TEST_KEYS[0],
        WAITROOM_BACKEND_SECRET=BACKEND_KEYS[0],
        WAITROOM_REDIS_URL=redis_url,
        WAITROOM_BACKEND_URL=backend_url,
        WAITROOM_PACER_TICK_S="0.05",
        WAITROOM_REFRESH_INTERVAL_S="0.05",
        WAITROOM_JOIN_LIMIT="0",  # the whole crowd comes from 127.0.0.1
    )
    env.update({f"WAITROOM_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def start_node(
    port: int, env: Mapping[str, str], clock_offset_s: float | None = None
) -> subprocess.Popen[bytes]:
    """A gateway node in its own process group (so killing it kills its workers too)."""
    if clock_offset_s is None:
        argv = [sys.executable, "-m", "waitroom", "serve", "--port", str(port), "--workers", "1"]
    else:
        argv = [
            sys.executable,
            "-m",
            "tests.support.gateway_processes",
            str(clock_offset_s),
            str(port),
        ]
    return subprocess.Popen(
        argv,
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_up(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    def alive() -> None:
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(
                f"gateway on {port} exited: {err.decode(errors='replace')[-2000:]}"
            )

    url = f"http://127.0.0.1:{port}/queue/state"
    if not wait_answering(url, timeout, check=alive):
        raise AssertionError(f"gateway on {port} did not come up within {timeout:.0f}s")


def kill_node(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the node and its workers, as a crash of the machine would.

    The whole group: Hypercorn's workers outlive a parent killed alone.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def stop_node(process: subprocess.Popen[bytes]) -> bytes:
    """Stop the node; its stderr."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate()
    return err


def _serve_with_skewed_clock(offset_s: float, port: int) -> None:
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset_s
    time.time_ns = lambda: real_time_ns() + int(offset_s * 1e9)

    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from waitroom.gateway.app import create_app
    from waitroom.settings import Settings

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.graceful_timeout = 1
    app = create_app(Settings.from_env())
    stop = asyncio.Event()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(main())


if __name__ == "__main__":
    _serve_with_skewed_clock(float(sys.argv[1]), int(sys.argv[2]))
