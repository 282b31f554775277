"""Run the lookup app on Hypercorn (default) or granian until a signal.

The server itself is started by ``waitroom.shared.server.run``, the same runner as the
gateway's (listen backlog 2048, uvloop workers, granian as an option). The app is
built in the worker from ``WAITROOM_LOOKUP_*`` variables by :func:`app_from_env`,
so any number of workers each open their own read-only connection. The runner
replaces a worker that dies and ends every worker when this process dies, even by
SIGKILL, so a killed backend never leaves a worker answering on its port.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from waitroom.errors import ConfigError
from waitroom.lookup.app import DEFAULT_TIME_ZONE, LookupApp, create_app
from waitroom.lookup.capacity import ENV_NAMES, Capacity, LegacyOrigin
from waitroom.lookup.errors import ImportFailed
from waitroom.shared import server as runner

log = logging.getLogger(__name__)

SERVERS = runner.SERVERS
_ENV_DB = "WAITROOM_LOOKUP_DB"
_ENV_SECRET = "WAITROOM_BACKEND_SECRET"  # noqa: S105 - the setting's name
_ENV_STANDALONE = "WAITROOM_LOOKUP_STANDALONE"
# The board's zone, for the hour a pass expires; the gateway's setting of the same name.
_ENV_TIME_ZONE = "WAITROOM_TIME_ZONE"


def split_keys(value: str | None) -> list[str]:
    """Secret keys from a comma-separated setting, newest first, blanks dropped."""
    return [k.strip() for k in (value or "").split(",") if k.strip()]


def app_from_env() -> LookupApp | LegacyOrigin:
    """The factory each worker calls to build the app from the environment."""
    app = create_app(
        os.environ[_ENV_DB],
        admission_keys=split_keys(os.environ.get(_ENV_SECRET)),
        standalone=os.environ.get(_ENV_STANDALONE) == "1",
        time_zone=os.environ.get(_ENV_TIME_ZONE) or DEFAULT_TIME_ZONE,
    )
    capacity = Capacity.from_env(dict(os.environ))
    return app if capacity is None else LegacyOrigin(app, capacity)


def serve(
    db: Path,
    *,
    keys: list[str],
    standalone: bool,
    host: str = "127.0.0.1",
    port: int = 8100,
    server: str = "hypercorn",
    workers: int = 1,
    capacity: Capacity | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. Fails fast on a missing database or secret.

    With ``capacity`` the app is the legacy origin (``waitroom.lookup.capacity``): one
    worker process, since its pool and counters live in one event loop.
    """
    if server not in SERVERS:
        raise ConfigError("--server", server, f"must be one of {', '.join(SERVERS)}")
    if capacity is not None and workers != 1:
        raise ConfigError(
            "--workers",
            workers,
            "the legacy origin's worker pool lives in one process: --capacity runs "
            "one worker process (size the site with --pool-workers)",
        )
    if not db.exists():
        raise ImportFailed(
            f"results database {str(db)!r} does not exist; "
            "run `waitroom lookup import FILE --db PATH` first"
        )
    # Built once here too: a bad secret or database fails before any worker starts.
    app = create_app(db, admission_keys=keys, standalone=standalone)
    rows = app.store.meta.get("row_count")
    # The first lookups in a cold file would wait on the disk; the page cache is
    # shared with the workers.
    warmed = app.store.warm()
    app.store.close()
    log.info("read %d MB of results into the page cache", warmed >> 20)
    mode = "standalone, no admission check" if standalone else "admission required"
    if capacity is not None:
        mode += f"; {capacity.describe()}"
    log.info("lookup backend: %s rows from %s, %s", rows, db, mode)
    print(f"lookup backend on http://{host}:{port}/ ({server}, {rows} results, {mode})", flush=True)
    os.environ[_ENV_DB] = str(db)
    os.environ[_ENV_SECRET] = ",".join(keys)
    os.environ[_ENV_STANDALONE] = "1" if standalone else "0"
    for name in ENV_NAMES:
        os.environ.pop(name, None)
    if capacity is not None:
        os.environ.update(capacity.to_env())
    runner.run(
        "waitroom.lookup.server:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        server=server,
    )
