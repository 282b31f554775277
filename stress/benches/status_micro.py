"""In-process cost of a waiting student's status check, without any server.

Run from the repository root::

    python -m stress.benches.status_micro [--reps 7] [--calls 20000] [--profile]

Calls the gateway's ASGI app (the lean layer in front of Quart) directly, as a
server would, for ``GET /status`` with a valid ticket of a student waiting in line,
and, for scale, for ``GET /queue/state`` (bytes rendered once per refresh) and the
raw constant-body app of ``stress.harness.plain_app``. Prints microseconds per call: the
median of ``--reps`` repetitions of ``--calls`` calls each, the routes interleaved
so that a noisy neighbour weighs on all of them alike. The room's view is loaded
once from a real (embedded) Redis and not refreshed while measuring.

Only the public API is used, so the same script measures an older tree too:
``PYTHONPATH=/path/to/old/tree python -m stress.benches.status_micro`` (see the README).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from stress.harness import plain_app
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.gateway.app import create_app
from waitroom.room.tickets import TICKET_COOKIE
from waitroom.settings import Settings
from waitroom.shared.rawasgi import ASGIApp

Call = Callable[[], Awaitable[None]]
HEADERS = [
    (b"host", b"127.0.0.1:8080"),
    (b"user-agent", b"loadgen"),
    (b"accept", b"application/json"),
]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    """A server's send: keeps the last status and body, to check the answers."""

    def __init__(self) -> None:
        self.status = 0
        self.body = b""

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            self.body = message["body"]


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8080),
    }


async def _measure(call: Call, calls: int) -> float:
    """Microseconds per call over ``calls`` calls."""
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls * 1e6


async def run(reps: int, calls: int, profile: bool) -> dict[str, list[float]]:
    with EmbeddedRedis() as redis:
        settings = Settings(
            mode="test",
            secret_keys=("status-micro-secret-0123456789",),
            backend_secret=("status-micro-backend-0123456789",),
            redis_url=redis.url,
            rate=0.5,  # slow enough that the student below stays in line
            max_active=1000,
        )
        app = create_app(settings)
        services = app.extensions["waitroom"]
        await services.queue.init()
        await services.view.refresh()
        for _ in range(50):
            await services.queue.join()
        state = await services.view.refresh()
        assert state is not None
        position = state.seq  # the back of the line
        _, token = services.signer.issue_ticket(position, state.epoch, state.frontier)
        cookie = f"{TICKET_COOKIE}={token}".encode()
        lean = cast(ASGIApp, app.asgi_app)
        status_scope = _scope("/status", [*HEADERS, (b"cookie", cookie)])
        state_scope = _scope("/queue/state", list(HEADERS))
        plain_scope = _scope("/", list(HEADERS))
        sink = _Sink()

        async def status() -> None:
            await lean(status_scope, _receive, sink)

        async def queue_state() -> None:
            await lean(state_scope, _receive, sink)

        async def plain() -> None:
            await plain_app.app(plain_scope, _receive, sink)

        await status()
        answer = json.loads(sink.body)
        if sink.status != 202 or answer["state"] != "waiting":
            raise SystemExit(f"not a waiting answer: {sink.status} {sink.body!r}")
        routes: dict[str, Call] = {"status": status, "queue_state": queue_state, "plain": plain}
        for call in routes.values():  # warm up
            await _measure(call, calls // 10 or 1)
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await _measure(status, calls)
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(16)
        results: dict[str, list[float]] = {name: [] for name in routes}
        for _ in range(reps):
            for name, call in routes.items():
                results[name].append(await _measure(call, calls))
        return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7, help="repetitions (median reported)")
    parser.add_argument("--calls", type=int, default=20_000, help="calls per repetition")
    parser.add_argument("--profile", action="store_true", help="cProfile the status check")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = asyncio.run(run(args.reps, args.calls, args.profile))
    if args.json:
        print(json.dumps(results))
        return
    for name, values in results.items():
        spread = ", ".join(f"{v:.1f}" for v in values)
        print(f"{name:12} {statistics.median(values):6.2f} us per call (median; {spread})")


if __name__ == "__main__":
    main()
