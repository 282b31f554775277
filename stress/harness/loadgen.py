"""A small HTTP/1.1 load generator that stays out of the way of what it measures.

Raw asyncio streams, keep-alive connections, one prepared request per send, and a
response parser that reads the status line, ``Content-Length`` and the body, nothing
more: a fraction of the CPU per request of any full HTTP client, so on this 2-core
machine one loader core can drive a server core to saturation. It reports its own
CPU use and says so when it saturated its core (then the figures measure the loader,
not the server).

API::

    from stress.harness.loadgen import Request, http_request, run, run_in_process

    def factory() -> Request:               # called once per request
        return Request(http_request("GET", "/healthz"), check=lambda s, b: s == 200)

    result = run_in_process("127.0.0.1", 8100, factory, connections=128,
                            duration_s=10, cpu=1)
    print(result.summary())                 # or result.to_dict() for a JSON report

``run`` is the same as a coroutine in the current event loop. Only chunk-free
responses with Content-Length are understood, which is what the servers here send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import resource
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

SATURATED_SHARE = 0.9  # loader CPU share of one core above which its figures lie


@dataclass(frozen=True, slots=True)
class Request:
    """Prepared bytes of one request and an optional check of its answer."""

    raw: bytes
    check: Callable[[int, bytes], bool] | None = None


RequestFactory = Callable[[], Request]


def http_request(
    method: str,
    path: str,
    *,
    host: str = "127.0.0.1",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """The bytes of a keep-alive HTTP/1.1 request."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def json_post(path: str, obj: Any, headers: Mapping[str, str] | None = None) -> bytes:
    """A POST with a JSON body."""
    return http_request(
        "POST",
        path,
        headers={"Content-Type": "application/json", **(headers or {})},
        body=json.dumps(obj).encode(),
    )


@dataclass
class LoadResult:
    connections: int
    duration_s: float
    requests: int
    rps: float
    latency_ms: dict[str, float]
    statuses: dict[int, int]
    errors: dict[str, int]
    timeouts: int
    check_failures: int
    cpu_s: float
    cpu_share: float  # of one core, during the measured window and warm-up
    saturated: bool
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and not self.timeouts and not self.check_failures

    def summary(self) -> str:
        lat = self.latency_ms
        text = (
            f"{self.rps:9.0f} req/s  {self.requests} reqs  c={self.connections}  "
            f"p50 {lat['p50']:.1f} p95 {lat['p95']:.1f} p99 {lat['p99']:.1f} "
            f"max {lat['max']:.1f} ms  status {dict(self.statuses)}  "
            f"errors {dict(self.errors)} timeouts {self.timeouts} "
            f"bad answers {self.check_failures}  loader cpu {self.cpu_share:.0%}"
        )
        return text + "".join(f"\n  ! {n}" for n in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _BadResponse(Exception):
    pass


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, server wants to close) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    try:
        status = int(head[9:12])
    except ValueError:
        raise _BadResponse(f"bad status line {head[:40]!r}") from None
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise _BadResponse("response without Content-Length")
    end = lower.index(b"\r\n", at + 2)
    length = int(lower[at + 17 : end])
    body = await reader.readexactly(length) if length else b""
    return status, body, b"\r\nconnection: close" in lower


class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.timeouts = 0
        self.check_failures = 0


async def _connection(
    host: str,
    port: int,
    factory: RequestFactory,
    stats: _Stats,
    measure_from: float,
    stop_at: float,
    timeout_s: float,
) -> None:
    clock = time.perf_counter
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while clock() < stop_at:
            if writer is None:
                try:
                    async with asyncio.timeout(timeout_s):
                        reader, writer = await asyncio.open_connection(host, port)
                except (OSError, TimeoutError) as exc:
                    stats.errors[f"connect: {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            assert reader is not None
            request = factory()
            started = clock()
            try:
                async with asyncio.timeout(timeout_s):
                    writer.write(request.raw)
                    status, body, close = await _read_response(reader)
            except TimeoutError:
                if started >= measure_from:
                    stats.timeouts += 1
                close = True
            except (OSError, asyncio.IncompleteReadError, _BadResponse, ValueError) as exc:
                if started >= measure_from:
                    stats.errors[type(exc).__name__] += 1
                close = True
            else:
                done = clock()
                if started >= measure_from and done <= stop_at:
                    stats.latencies.append(done - started)
                    stats.statuses[status] += 1
                    if request.check is not None and not request.check(status, body):
                        stats.check_failures += 1
            if close:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))
    return sorted_values[i] * 1000


async def run(
    host: str,
    port: int,
    factory: RequestFactory,
    *,
    connections: int = 128,
    duration_s: float = 10.0,
    warmup_s: float = 1.0,
    timeout_s: float = 5.0,
) -> LoadResult:
    """Keep ``connections`` busy for ``warmup_s + duration_s``; measure the last part."""
    stats = _Stats()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    measure_from = wall0 + warmup_s
    stop_at = measure_from + duration_s
    tasks = [
        asyncio.create_task(
            _connection(host, port, factory, stats, measure_from, stop_at, timeout_s)
        )
        for _ in range(connections)
    ]
    try:
        async with asyncio.timeout(warmup_s + duration_s + timeout_s + 5):
            await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
    wall = time.perf_counter() - wall0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    lat = sorted(stats.latencies)
    share = cpu / wall if wall else 0.0
    result = LoadResult(
        connections=connections,
        duration_s=duration_s,
        requests=len(lat),
        rps=len(lat) / duration_s,
        latency_ms={
            "p50": _percentile(lat, 0.50),
            "p95": _percentile(lat, 0.95),
            "p99": _percentile(lat, 0.99),
            "max": lat[-1] * 1000 if lat else float("nan"),
        },
        statuses=dict(stats.statuses),
        errors=dict(stats.errors),
        timeouts=stats.timeouts,
        check_failures=stats.check_failures,
        cpu_s=cpu,
        cpu_share=share,
        saturated=share >= SATURATED_SHARE,
    )
    if result.saturated:
        result.notes.append(
            f"the load generator used {share:.0%} of its core: it, not the server, may be the limit"
        )
    return result


def _child(
    conn: Any, host: str, port: int, factory: RequestFactory, cpu: int | None, kw: dict[str, Any]
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(run(host, port, factory, **kw))
    conn.send(result)
    conn.close()


def run_in_process(
    host: str,
    port: int,
    factory: RequestFactory,
    *,
    cpu: int | None = None,
    connections: int = 128,
    duration_s: float = 10.0,
    warmup_s: float = 1.0,
    timeout_s: float = 5.0,
) -> LoadResult:
    """:func:`run` in a forked process, pinned to core ``cpu`` when given.

    Forked, so ``factory`` may be any callable, closures included.
    """
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)
    kw = {
        "connections": connections,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "timeout_s": timeout_s,
    }
    proc = context.Process(target=_child, args=(child, host, port, factory, cpu, kw))
    proc.start()
    child.close()
    limit = warmup_s + duration_s + timeout_s + 30
    try:
        if not parent.poll(limit):
            raise TimeoutError(f"load generator gave no result within {limit:.0f} s")
        result: LoadResult = parent.recv()
        return result
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
