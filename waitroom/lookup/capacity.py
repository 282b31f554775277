"""A result site of fixed capacity: the legacy origin a waiting room is measured against.

Real board portals are nginx in front of a fixed pool of application workers over a
database with a bounded connection pool (README, "A legacy origin to test against").
:class:`LegacyOrigin` wraps the lookup app in that model, so the
stress scenarios show what such a site does under a spike and what the waiting room
changes:

- **W workers** (``--pool-workers``), each lookup holding one for ``W / N`` seconds
  (``N`` = ``--capacity``, lookups a second in all). The hold is a timer, not work:
  the process's own CPU is not what limits it, the pool is, as on a real site whose
  workers wait on the database.
- **A bounded backlog** (``--pool-backlog``, default five seconds of work), first
  come first served.
- **The answers real sites give past it, never faster:** a lookup that waited in the
  backlog ``--queue-timeout`` seconds without a worker gets a 500 then (the
  application's "too many connections" after its pool wait); one that arrives with
  the backlog full is held ``--proxy-timeout`` seconds and then gets nginx's 502
  (the proxy could not hand it to the application); and when the proxy's timeout is
  the shorter of the two, a lookup still waiting in the backlog at that point gets
  nginx's 504 instead of the 500.

Only lookups (``POST /result``, ``POST /api/result``) take a worker, so "N lookups
a second" is exact; the form, static files and ``/healthz`` are answered at once,
as a site's cached pages and files would be. ``GET /_origin/counters`` reports what
the origin answered (JSON), free of the pool and of the admission check. The pool
lives in one process: ``waitroom lookup serve --capacity`` runs one worker process,
so the counters and the capacity are the whole site's.

A client that leaves does not free the site's worker: the work goes on, as a PHP
script runs to its end after the browser has gone, which is why impatient retries
add load on a real site.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

from waitroom.errors import ConfigError
from waitroom.shared.rawasgi import ASGIApp, Message, Receive, Scope, Send

COUNTERS_PATH = "/_origin/counters"
LOOKUPS = frozenset({("POST", "/result"), ("POST", "/api/result")})
DEFAULT_WORKERS = 16
DEFAULT_BACKLOG_S = 5.0
DEFAULT_QUEUE_TIMEOUT_S = 3.0
# nginx's own default for proxy_connect_timeout and proxy_read_timeout.
DEFAULT_PROXY_TIMEOUT_S = 60.0


def _nginx_page(status: int, reason: str) -> bytes:
    # nginx's stock error page, byte for byte: what a student sees on a real site.
    title = f"{status} {reason}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()


_PAGES = {
    500: (
        b"<!DOCTYPE html>\n<html><head><title>500 Internal Server Error</title></head>"
        b"<body><h1>Internal Server Error</h1><p>SQLSTATE[HY000] [1040] Too many "
        b"connections</p></body></html>\n"
    ),
    502: _nginx_page(502, "Bad Gateway"),
    504: _nginx_page(504, "Gateway Time-out"),
}


@dataclass(frozen=True)
class Capacity:
    """The site's size; every value is checked here, named by its flag."""

    per_s: float
    workers: int = DEFAULT_WORKERS
    backlog: int | None = None  # None: DEFAULT_BACKLOG_S of work
    queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S
    proxy_timeout_s: float = DEFAULT_PROXY_TIMEOUT_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.per_s) and self.per_s > 0):
            raise ConfigError("--capacity", self.per_s, "must be a number of lookups a second > 0")
        if self.workers < 1:
            raise ConfigError("--pool-workers", self.workers, "must be at least 1")
        if self.backlog is not None and self.backlog < 0:
            raise ConfigError("--pool-backlog", self.backlog, "must be 0 or more")
        for flag, value in (
            ("--queue-timeout", self.queue_timeout_s),
            ("--proxy-timeout", self.proxy_timeout_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(flag, value, "must be a number of seconds > 0")

    @property
    def service_s(self) -> float:
        """How long one lookup holds a worker: W workers make N lookups a second."""
        return self.workers / self.per_s

    @property
    def backlog_limit(self) -> int:
        if self.backlog is not None:
            return self.backlog
        return math.ceil(self.per_s * DEFAULT_BACKLOG_S)

    def describe(self) -> str:
        return (
            f"legacy origin: {self.per_s:g} lookups/s, {self.workers} workers of "
            f"{self.service_s * 1000:.0f} ms, backlog {self.backlog_limit}, 500 after "
            f"{self.queue_timeout_s:g} s in it, 502 after {self.proxy_timeout_s:g} s past it"
        )

    def to_env(self) -> dict[str, str]:
        return {
            _ENV_CAPACITY: repr(self.per_s),
            _ENV_WORKERS: str(self.workers),
            _ENV_BACKLOG: str(self.backlog_limit),
            _ENV_QUEUE_TIMEOUT: repr(self.queue_timeout_s),
            _ENV_PROXY_TIMEOUT: repr(self.proxy_timeout_s),
        }

    @classmethod
    def from_env(cls, environ: dict[str, str]) -> Capacity | None:
        """What :meth:`to_env` wrote, in a worker process; None for the lean backend."""
        if not environ.get(_ENV_CAPACITY):
            return None
        return cls(
            per_s=float(environ[_ENV_CAPACITY]),
            workers=int(environ[_ENV_WORKERS]),
            backlog=int(environ[_ENV_BACKLOG]),
            queue_timeout_s=float(environ[_ENV_QUEUE_TIMEOUT]),
            proxy_timeout_s=float(environ[_ENV_PROXY_TIMEOUT]),
        )


_ENV_CAPACITY = "WAITROOM_LOOKUP_CAPACITY"
_ENV_WORKERS = "WAITROOM_LOOKUP_POOL_WORKERS"
_ENV_BACKLOG = "WAITROOM_LOOKUP_POOL_BACKLOG"
_ENV_QUEUE_TIMEOUT = "WAITROOM_LOOKUP_QUEUE_TIMEOUT_S"
_ENV_PROXY_TIMEOUT = "WAITROOM_LOOKUP_PROXY_TIMEOUT_S"
ENV_NAMES = (_ENV_CAPACITY, _ENV_WORKERS, _ENV_BACKLOG, _ENV_QUEUE_TIMEOUT, _ENV_PROXY_TIMEOUT)


class WorkerPool:
    """W workers and a first-come-first-served backlog, on one event loop.

    Service is timed from when a worker was due to be free, not from when the loop
    got round to it, so a lagging loop catches up and the pool still does N lookups
    a second over any stretch with a backlog.
    """

    def __init__(self, capacity: Capacity) -> None:
        self.capacity = capacity
        self.idle = capacity.workers
        # (arrived, future): the future gets the time its worker became free. Waiters
        # that gave up leave a cancelled future here, skipped when a worker frees.
        self._queue: deque[tuple[float, asyncio.Future[float]]] = deque()
        self.waiting = 0
        self.waiting_max = 0

    def take_idle(self) -> bool:
        """A worker at once, if one is idle and nobody is ahead in the backlog."""
        if self.idle and not self.waiting:
            self.idle -= 1
            return True
        return False

    def enqueue(self, now: float) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._queue.append((now, future))
        self.waiting += 1
        self.waiting_max = max(self.waiting_max, self.waiting)
        return future

    def left_backlog(self) -> None:
        self.waiting -= 1

    def release(self, free_at: float) -> None:
        """The worker that was due to be free at ``free_at`` takes the next in line."""
        while self._queue:
            arrived, future = self._queue.popleft()
            if not future.done():
                future.set_result(max(free_at, arrived))
                return
        self.idle += 1


class LegacyOrigin:
    """The lookup app behind a fixed worker pool, a bounded backlog and a proxy."""

    def __init__(self, app: ASGIApp, capacity: Capacity) -> None:
        self.app = app
        self.capacity = capacity
        self.pool = WorkerPool(capacity)
        self.answered: Counter[int] = Counter()
        self.lookups: Counter[int] = Counter()
        self.served = 0  # lookups that held a worker for the whole service time
        self.held = 0  # arrivals past a full backlog, waiting out the proxy's timeout
        self.held_max = 0
        self.timeouts: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if path == COUNTERS_PATH:
            await self._counters(method, send)
            return
        lookup = (method, path) in LOOKUPS

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.answered[message["status"]] += 1
                if lookup:
                    self.lookups[message["status"]] += 1
            # A client that left is not told: ASGI servers drop (or, by the spec's
            # newer words, raise OSError on) a send after the client has gone, and
            # the site's work is done either way; the answer still counts, as it
            # would in the application's own log.
            with contextlib.suppress(OSError):
                await send(message)

        if lookup and not await self._work(counted):
            return
        await self.app(scope, receive, counted)

    async def _work(self, send: Send) -> bool:
        """Hold a worker for the service time; False when the answer was an error."""
        cap, pool = self.capacity, self.pool
        loop = asyncio.get_running_loop()
        now, arrived = loop.time(), time.monotonic()
        if pool.take_idle():
            start = now
        elif pool.waiting >= cap.backlog_limit:
            self.held += 1
            self.held_max = max(self.held_max, self.held)
            try:
                await _until(arrived + cap.proxy_timeout_s)
            finally:
                self.held -= 1
            self.timeouts["backlog_full"] += 1
            await _error(send, 502)
            return False
        else:
            queue_first = cap.queue_timeout_s <= cap.proxy_timeout_s
            limit = min(cap.queue_timeout_s, cap.proxy_timeout_s)
            future = pool.enqueue(now)
            try:
                async with asyncio.timeout(limit):
                    await future
            except TimeoutError:
                pass  # unless a worker came just as the clock ran out: see below
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    end = future.result() + cap.service_s
                    loop.call_at(end, pool.release, end)
                raise
            finally:
                pool.left_backlog()
            if future.cancelled():
                await _until(arrived + limit)
                self.timeouts["queue" if queue_first else "proxy"] += 1
                await _error(send, 500 if queue_first else 504)
                return False
            start = future.result()
        end = start + cap.service_s
        try:
            await asyncio.sleep(max(0.0, end - loop.time()))
        except asyncio.CancelledError:
            loop.call_at(end, pool.release, end)  # the worker finishes the work anyway
            raise
        pool.release(end)
        self.served += 1
        return True

    def snapshot(self) -> dict[str, Any]:
        cap, pool = self.capacity, self.pool
        return {
            "capacity_per_s": cap.per_s,
            "workers": cap.workers,
            "service_ms": cap.service_s * 1000,
            "backlog_limit": cap.backlog_limit,
            "queue_timeout_s": cap.queue_timeout_s,
            "proxy_timeout_s": cap.proxy_timeout_s,
            "answered": {str(k): v for k, v in sorted(self.answered.items())},
            "lookups": {str(k): v for k, v in sorted(self.lookups.items())},
            "served": self.served,
            "in_service": cap.workers - pool.idle,
            "backlog": pool.waiting,
            "backlog_max": pool.waiting_max,
            "held": self.held,
            "held_max": self.held_max,
            "timeouts": {k: self.timeouts[k] for k in ("queue", "proxy", "backlog_full")},
        }

    async def _counters(self, method: str, send: Send) -> None:
        if method not in ("GET", "HEAD"):
            await _send(send, 405, b"GET or HEAD\n", b"text/plain", [(b"allow", b"GET, HEAD")])
            return
        body = json.dumps(self.snapshot()).encode()
        await _send(send, 200, body, b"application/json", [], head=method == "HEAD")


async def _until(deadline: float) -> None:
    """Sleep until ``deadline`` on the monotonic clock.

    uvloop's timers run on a millisecond loop clock cached per iteration, so they can
    fire a little early; an error page must never come sooner than its timeout.
    """
    # A clock, not a condition another task sets: no event could stand in for it.
    while (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(left)


async def _error(send: Send, status: int) -> None:
    await _send(send, status, _PAGES[status], b"text/html", [])


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: list[tuple[bytes, bytes]],
    *,
    head: bool = False,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
