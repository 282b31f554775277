"""Run the lookup app on Hypercorn (default) or granian, one worker, until a signal.

Hypercorn's default listen backlog of 100 overflows when a thousand students connect
at once (the kernel drops the attempts and clients time out), so the backlog is
2048 on both servers. SIGINT and SIGTERM stop accepting, let in-flight requests
finish, and return.

granian runs the app in its own worker process, which imports it by name; the
settings reach it through environment variables read by :func:`granian_app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from lookup.app import LookupApp, create_app
from lookup.errors import ImportFailed
from waitroom.errors import ConfigError

log = logging.getLogger(__name__)

BACKLOG = 2048
SERVERS = ("hypercorn", "granian")
_ENV_DB = "WAITROOM_LOOKUP_DB"
_ENV_SECRET = "WAITROOM_BACKEND_SECRET"  # noqa: S105 - the setting's name
_ENV_STANDALONE = "WAITROOM_LOOKUP_STANDALONE"


def split_keys(value: str | None) -> list[str]:
    """Secret keys from a comma-separated setting, newest first, blanks dropped."""
    return [k.strip() for k in (value or "").split(",") if k.strip()]


async def _serve_hypercorn(app: LookupApp, host: str, port: int) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.backlog = BACKLOG
    config.accesslog = None  # one line per request would cost more than the lookup
    config.errorlog = log
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _run_asyncio(app: LookupApp, host: str, port: int) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(_serve_hypercorn(app, host, port))
        return
    # uvloop saves a visible share of CPU per request under Hypercorn.
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve_hypercorn(app, host, port))


def granian_app() -> LookupApp:
    """Factory granian's worker calls to build the app from the environment."""
    return create_app(
        os.environ[_ENV_DB],
        admission_keys=split_keys(os.environ.get(_ENV_SECRET)),
        standalone=os.environ.get(_ENV_STANDALONE) == "1",
    )


def _run_granian(db: Path, keys: list[str], standalone: bool, host: str, port: int) -> None:
    try:
        from granian import Granian
        from granian.constants import Interfaces
    except ImportError as exc:
        raise ConfigError(
            "--server", "granian", "granian is not installed; pip install 'waitroom[granian]'"
        ) from exc
    os.environ[_ENV_DB] = str(db)
    os.environ[_ENV_SECRET] = ",".join(keys)
    os.environ[_ENV_STANDALONE] = "1" if standalone else "0"
    server = Granian(
        "lookup.server:granian_app",
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=1,
        backlog=BACKLOG,
        factory=True,
        log_access=False,
    )
    server.serve()  # granian handles SIGINT/SIGTERM itself


def serve(
    db: Path,
    *,
    keys: list[str],
    standalone: bool,
    host: str = "127.0.0.1",
    port: int = 8100,
    server: str = "hypercorn",
) -> None:
    """Serve until SIGINT/SIGTERM. Fails fast on a missing database or secret."""
    if server not in SERVERS:
        raise ConfigError("--server", server, f"must be one of {', '.join(SERVERS)}")
    if not db.exists():
        raise ImportFailed(
            f"results database {str(db)!r} does not exist; "
            "run `waitroom lookup import FILE --db PATH` first"
        )
    app = create_app(db, admission_keys=keys, standalone=standalone)
    rows = app.store.meta.get("row_count")
    warmed = app.store.warm()
    log.info("read %d MB of results into the page cache", warmed >> 20)
    mode = "standalone, no admission check" if standalone else "admission required"
    log.info("lookup backend: %s rows from %s, %s", rows, db, mode)
    print(f"lookup backend on http://{host}:{port}/ ({server}, {rows} results, {mode})", flush=True)
    if server == "granian":
        app.store.close()
        _run_granian(db, keys, standalone, host, port)
        return
    with contextlib.suppress(KeyboardInterrupt):
        _run_asyncio(app, host, port)
