"""``python -m stress ha``: what surviving the loss of a Redis machine costs, measured.

1. **WAIT.** Through Sentinel (a primary, its replica, three sentinels on this
   machine), the calls a gateway worker makes one at a time (``waitroom.line.coalesce``
   keeps one batch of each kind in flight): joins of one arrival, joins coalesced
   in blocks of 32, ticket trades in blocks of 32; with joins and trades answered
   at once (``WAITROOM_REDIS_WAIT_REPLICAS=0``) and only once the replica holds
   them (1), in interleaved rounds of the same run.
2. **Failover.** A primary killed (SIGKILL) under a steady stream of joins: when
   the sentinels name the replica, and when a join is answered again; the same for
   a cluster node and its replica. A few rounds each, a fresh set every round.
3. **Memory.** What a million students leave in Redis: a spent-ticket marker each
   (kept for the ticket's life, 12 h), a lookup counter per pass (kept for the
   pass's life) and a join counter per client (kept for the join window), measured
   by ``used_memory`` on an empty server.

Reports go to ``stress/reports/ha-<date>/`` (Markdown and JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from stress.harness import report
from stress.harness.analysis import percentiles
from waitroom.devtools.embedded_ha import ClusterSet, SentinelSet
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.errors import StoreUnavailable
from waitroom.line.keys import RoomKeys
from waitroom.line.scripts import COUNT, JOIN, SPEND
from waitroom.line.state import Queue
from waitroom.line.store import Client, connect, connect_sync
from waitroom.settings import Settings

BLOCK = 32
MILLION = 1_000_000


def settings(url: str, wait_replicas: int = -1) -> Settings:
    return Settings(
        mode="test",
        secret_keys=(secrets.token_urlsafe(24),),
        backend_secret=(secrets.token_urlsafe(24),),
        redis_url=url,
        redis_wait_replicas=wait_replicas,
        max_active=MILLION,
    )


# -- 1. WAIT ------------------------------------------------------------------------------


async def _measure(
    call: Callable[[], Awaitable[int]], seconds: float
) -> tuple[float, float, list[float]]:
    """(calls a second, items a second, per-call latencies in ms) over ``seconds``."""
    latencies: list[float] = []
    items = 0
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < seconds:
        items += await call()
        latencies.append((time.perf_counter() - now) * 1000)
    span = time.perf_counter() - started
    return len(latencies) / span, items / span, latencies


async def wait_cost(rounds: int, seconds: float) -> dict[str, Any]:
    with SentinelSet() as ha:
        client = connect(ha.url)
        try:
            queues = {w: Queue(client, settings(ha.url, w).line()) for w in (0, 1)}
            await queues[0].init()

            def steps(q: Queue) -> dict[str, Callable[[], Awaitable[int]]]:
                async def one() -> int:
                    return len(await q.join_block([None]) or [])

                async def block() -> int:
                    return len(await q.join_block([None] * BLOCK) or [])

                async def trade() -> int:
                    ids = [secrets.token_urlsafe(9) for _ in range(BLOCK)]
                    return len(await q.spend_many(ids))

                return {"join, 1 a call": one, f"join, {BLOCK} a call": block, "trade": trade}

            samples: dict[tuple[str, int], list[tuple[float, float, list[float]]]] = {}
            for _ in range(rounds):
                for wait in (0, 1):
                    for name, step in steps(queues[wait]).items():
                        result = await _measure(step, seconds)
                        samples.setdefault((name, wait), []).append(result)
            # The replica lost: nothing to wait for, but each write through Sentinel
            # asks the sentinels whether its server is still the primary.
            ha.replica.stop()
            for _ in range(100):  # until the primary sees it gone (at once, here)
                if not (await client.execute_command("ROLE"))[2]:
                    break
                await asyncio.sleep(0.05)
            lost = f"join, {BLOCK} a call, no replica online"
            for _ in range(rounds):
                for wait in (0, 1):
                    step = steps(queues[wait])[f"join, {BLOCK} a call"]
                    samples.setdefault((lost, wait), []).append(await _measure(step, seconds))
        finally:
            await client.aclose()
    out: dict[str, Any] = {}
    for (name, wait), runs in samples.items():
        latencies = [ms for _, _, lat in runs for ms in lat]
        out.setdefault(name, {})[f"wait_{wait}"] = {
            "calls_per_s": statistics.median(c for c, _, _ in runs),
            "items_per_s": statistics.median(i for _, i, _ in runs),
            "rounds_items_per_s": [round(i) for _, i, _ in runs],
            "latency_ms": percentiles(latencies, (50, 99)),
        }
    return out


# -- 2. failover --------------------------------------------------------------------------


async def _stream(
    queue: Queue, log: list[tuple[float, bool]], stop: asyncio.Event, killed: list[float]
) -> None:
    """Joins one after another, as a busy worker's batches go, each logged."""
    while not stop.is_set():
        try:
            ok = await queue.join_block([None] * 4) is not None
        except StoreUnavailable:
            ok = False
        log.append((time.monotonic(), ok))
        if ok and killed and log[-1][0] > killed[0]:
            return
        await asyncio.sleep(0.01 if ok else 0.05)


async def _failover_round(
    client: Client, kill: Callable[[], None], promoted: Callable[[], Any], url: str
) -> dict[str, float]:
    queue = Queue(client, settings(url).line())
    await queue.init()
    log: list[tuple[float, bool]] = []
    stop = asyncio.Event()
    after: list[float] = []
    stream = asyncio.create_task(_stream(queue, log, stop, after))
    try:
        await asyncio.sleep(1.0)
        killed = time.monotonic()
        after.append(killed)
        kill()
        await asyncio.to_thread(promoted)
        switched = time.monotonic() - killed
        await asyncio.wait_for(asyncio.shield(stream), 20)  # until a join is answered
    finally:
        stop.set()
        await stream
    failed = [t for t, ok in log if not ok]
    back = next(t for t, ok in log if ok and t > killed)
    return {
        "promoted_s": round(switched, 3),
        "joins_answered_again_s": round(back - killed, 3),
        "last_failed_join_s": round(max(failed) - killed, 3) if failed else 0.0,
        "failed_join_calls": len(failed),
    }


async def failover(rounds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"sentinel": [], "cluster": []}
    key = RoomKeys("results").state
    for _ in range(rounds):
        with SentinelSet() as ha:
            client = connect(ha.url)
            try:
                old = ha.primary_port()
                out["sentinel"].append(
                    await _failover_round(
                        client,
                        ha.by_port(old).kill,
                        functools.partial(ha.wait_failover, old),
                        ha.url,
                    )
                )
            finally:
                await client.aclose()
        with ClusterSet() as cluster:
            client = connect(cluster.url)
            try:
                node = cluster.owner_of(key)
                out["cluster"].append(
                    await _failover_round(
                        client,
                        node.kill,
                        functools.partial(cluster.wait_promoted, key, node),
                        cluster.url,
                    )
                )
            finally:
                await client.aclose()
    return out


# -- 3. memory ----------------------------------------------------------------------------


def memory(students: int) -> dict[str, Any]:
    """Bytes per student of each kind of key a student leaves behind."""
    keys = RoomKeys("results")
    with EmbeddedRedis(maxmemory="4gb") as server:
        client = connect_sync(server.url)
        try:
            spend = SPEND.register(client)
            count = COUNT.register(client)
            join = JOIN.register(client)
            q = settings(server.url)
            client.hset(keys.state, mapping={"seq": 0, "frontier": 0, "epoch": "m"})

            def used() -> int:
                return int(client.info("memory")["used_memory"])

            out: dict[str, Any] = {"students": students}
            batch = 1000
            steps: dict[str, Callable[[int], None]] = {
                # A ticket traded for a pass: a marker kept for the ticket's life.
                "spent_ticket": lambda n: spend(
                    keys=[keys.state, *(keys.spent(secrets.token_urlsafe(9)) for _ in range(n))],
                    args=[q.ticket_ttl_s],
                ),
                # A pass's lookups: a counter kept for the pass's life.
                "lookup_counter": lambda n: count(
                    keys=[keys.lookups(secrets.token_urlsafe(9)) for _ in range(n)],
                    args=[(q.pass_ttl_s + 30) * 1000, *([1] * n)],
                ),
                # A client's joins: a counter kept for the join window (IPv4 clients).
                "join_counter": lambda n: join(
                    keys=[
                        keys.state,
                        keys.active,
                        keys.config,
                        *(
                            k
                            for _ in range(n)
                            for k in (keys.joins(_address()), keys.prequeue_joins("x"))
                        ),
                    ],
                    args=[q.max_active, 60_000, q.ticket_ttl_s * 2, "", n, 60, 60_000, 4],
                ),
            }
            for name, step in steps.items():
                before = used()
                started = time.monotonic()
                for _ in range(students // batch):
                    step(batch)
                out[name] = {
                    "bytes_per_student": round((used() - before) / students, 1),
                    "seconds": round(time.monotonic() - started, 1),
                }
            out["used_memory_bytes"] = used()
        finally:
            client.close()
    return out


def _address() -> str:
    return ".".join(str(secrets.randbelow(256)) for _ in range(4))


# -- the report ---------------------------------------------------------------------------


def markdown_of(data: dict[str, Any]) -> str:
    parts = []
    if "wait" in data:
        rows = []
        for name, by_wait in data["wait"].items():
            off, on = by_wait["wait_0"], by_wait["wait_1"]
            rows.append(
                [
                    name,
                    f"{off['items_per_s']:,.0f}",
                    f"{on['items_per_s']:,.0f}",
                    f"{on['items_per_s'] / off['items_per_s']:.2f}",
                    f"{off['latency_ms']['p50']:.2f} / {off['latency_ms']['p99']:.2f}",
                    f"{on['latency_ms']['p50']:.2f} / {on['latency_ms']['p99']:.2f}",
                ]
            )
        parts.append(
            report.table(
                [
                    "one worker's calls",
                    "per s, no WAIT",
                    "per s, WAIT 1",
                    "ratio",
                    "ms p50 / p99, no WAIT",
                    "ms p50 / p99, WAIT 1",
                ],
                rows,
            )
        )
    if "failover" in data:
        rows = []
        for kind, runs in data["failover"].items():
            for i, run in enumerate(runs, start=1):
                rows.append(
                    [
                        f"{kind} {i}",
                        run["promoted_s"],
                        run["joins_answered_again_s"],
                        run["failed_join_calls"],
                    ]
                )
        parts.append(
            report.table(
                ["primary killed", "replica promoted, s", "joins answered again, s", "failed"],
                rows,
            )
        )
    if "memory" in data:
        m = data["memory"]
        rows = [
            [name, m[name]["bytes_per_student"], f"{m[name]['bytes_per_student']:.0f} MB"]
            for name in ("spent_ticket", "lookup_counter", "join_counter")
        ]
        parts.append(report.table(["key", "bytes per student", "per million students"], rows))
    return "\n\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stress ha", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="WAIT rounds (default 3)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per WAIT measurement")
    parser.add_argument("--failovers", type=int, default=3, help="kills per topology")
    parser.add_argument("--students", type=int, default=MILLION, help="for the memory figure")
    parser.add_argument(
        "--only", choices=("wait", "failover", "memory"), help="run one part (default: all)"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    data: dict[str, Any] = {}
    if args.only in (None, "wait"):
        data["wait"] = asyncio.run(wait_cost(args.rounds, args.seconds))
    if args.only in (None, "failover"):
        data["failover"] = asyncio.run(failover(args.failovers))
    if args.only in (None, "memory"):
        data["memory"] = memory(args.students)
    markdown = markdown_of(data)
    report.say(markdown)
    folder = report.write("ha", {**report.header("ha", argv), **data}, markdown)
    report.say(f"report: {folder}")
    return 0
