"""The servers a bench measures, started the same way by every bench.

The yardstick (``stress.harness.plain_app`` on the server under test, through
waitroom's own server runner, so with the gateway's server settings), the lookup
backend, and a one-worker gateway in front of it: each a child of
:class:`stress.harness.processes.Processes`, pinned to the core it is given, with
an environment clear of the operator's own ``WAITROOM_*`` settings.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path

from stress.harness.processes import HOST, SERVER_CORE, Processes

ROOM = "results"


def installed(servers: str) -> list[str]:
    """The comma-separated ``servers`` that can run here (granian is an extra)."""
    out = []
    for server in filter(None, servers.split(",")):
        if server == "granian" and importlib.util.find_spec("granian") is None:
            print("note: granian is not installed, skipped (pip install 'waitroom[granian]')")
        else:
            out.append(server)
    return out


def clean_env() -> dict[str, str]:
    """This process's environment without any ``WAITROOM_*`` setting."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}


def start_yardstick(procs: Processes, server: str, port: int, env: dict[str, str]) -> int:
    """The raw ASGI app on ``server``, pinned to the server core; its pid."""
    code = (
        "from waitroom.shared.server import run; "
        f"run('stress.harness.plain_app:app', host={HOST!r}, port={port}, server={server!r})"
    )
    return procs.start(f"{server}-plain", ["-c", code], clean_env() | env, SERVER_CORE)


def start_backend(
    procs: Processes,
    name: str,
    server: str,
    port: int,
    db: Path,
    secret: str,
    core: int | None,
) -> int:
    """``waitroom lookup serve`` on ``db``, admitting what ``secret`` signed; its pid."""
    return procs.start(
        name,
        [
            *("-m", "waitroom", "lookup", "serve", "--db", str(db), "--host", HOST),
            *("--port", str(port), "--server", server),
        ],
        {**clean_env(), "WAITROOM_BACKEND_SECRET": secret},
        core,
    )


def start_gateway(
    procs: Processes,
    server: str,
    port: int,
    *,
    redis_url: str,
    backend_port: int,
    backend_secret: str,
    secret: str | None = None,
    **settings: str,
) -> int:
    """``waitroom serve``, one worker on the server core, in front of the backend on
    ``backend_port``; ``settings`` are more ``WAITROOM_*`` variables. Its pid."""
    env = {
        **clean_env(),
        "WAITROOM_MODE": "test",
        "WAITROOM_SECRET_KEYS": secret or secrets.token_urlsafe(32),
        "WAITROOM_BACKEND_SECRET": backend_secret,
        "WAITROOM_REDIS_URL": redis_url,
        "WAITROOM_BACKEND_URL": f"http://{HOST}:{backend_port}",
        "WAITROOM_ROOM": ROOM,
        "WAITROOM_RATE": "1000",
        **{f"WAITROOM_{k.upper()}": v for k, v in settings.items()},
    }
    return procs.start(
        f"{server}-gateway",
        [
            *("-m", "waitroom", "serve", "--server", server, "--workers", "1"),
            *("--host", HOST, "--port", str(port)),
        ],
        env,
        SERVER_CORE,
    )
