"""Running an ASGI app (the gateway or the lookup backend) on a production server.

Hypercorn is the default; granian is the optional extra for operators who want the
most throughput (``pip install 'waitroom[granian]'``). Both get a listen backlog
sized for a spike: Hypercorn's default of 100 overflowed at 1,000 simultaneous
connections on a 2-core machine and those clients saw timeouts. The app is named
by import path ("module:attribute") so every worker process imports its own copy;
settings reach the workers through ``WAITROOM_*`` environment variables.
"""

from __future__ import annotations

import importlib.util

from waitroom.errors import ConfigError

SERVERS = ("hypercorn", "granian")


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
    from hypercorn.run import run as hypercorn_run

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
    result: int = hypercorn_run(config)
    return result


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
    Granian(
        target,
        address=host,
        port=port,
        interface=Interfaces.ASGI,
        workers=workers,
        backlog=backlog,
        factory=factory,
        log_access=False,
    ).serve()
    return 0
