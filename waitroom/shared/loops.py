"""One way to run "every N seconds until stopped": the workers' background loops.

The pacer, the room's view and the backend counters each do one step, wait, and
again, for the life of the worker; ``every`` is that loop, once. A step that fails
is logged and the loop goes on (a pacer that dies freezes the line for good), and
the loop ends only by cancellation, which ``stop_requested`` makes sure it sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

log = logging.getLogger(__name__)


def stop_requested() -> bool:
    """Whether this task was asked to stop while a Redis call was in flight.

    redis-py can turn a cancellation that arrives mid-command into a connection
    error, which a loop survives by design; without this check the stop is lost
    and the server's shutdown waits for the loop forever.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def every(
    interval: float | Callable[[], float],
    step: Callable[[], Awaitable[object]],
    *,
    what: str,
    on_error: Callable[[], None] | None = None,
    logger: logging.Logger = log,
) -> NoReturn:
    """``await step()``, then sleep ``interval`` seconds (or what ``interval()``
    says after each step), until the task is cancelled.

    An exception from a step is logged as "waitroom: <what> failed" and
    ``on_error`` is told; the next step comes after the same sleep. A cancellation
    that a step swallowed (``stop_requested``) ends the loop as if it had not.
    """
    while True:
        try:
            await step()
        except Exception:
            logger.exception("waitroom: %s failed", what)
            if on_error is not None:
                on_error()
        if stop_requested():
            raise asyncio.CancelledError
        await asyncio.sleep(interval() if callable(interval) else interval)
