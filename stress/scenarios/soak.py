"""``python -m stress.scenarios.soak``: steady arrivals for a long time; is every bound a bound?

Runs the real stack (embedded Redis, the lookup backend and a two-worker gateway,
each through the real CLI in its own process) and sends students at a steady rate
for ``--minutes`` (20 by default): each joins, polls as told, takes a pass, looks up
a real candidate, checks the marksheet and leaves; some give up while waiting.
Every ``--every`` seconds it records the gateway's and the backend's memory
(RSS of each process tree), Redis's ``used_memory`` and key count, and the line.

Every Redis key of a room is bounded by a TTL or a size; the per-student keys (the
spent-ticket marker, the per-pass lookup counter) live as long as a ticket or a
pass. The soak shortens the ticket lifetime to five minutes, so within the run
those keys reach the level where as many expire as are made: after the warm-up,
Redis's memory and the processes' memory must stay flat. The verdict compares the
last quarter of the run with the second quarter.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from stress.harness.cpu import tree_rss_mb
from stress.harness.paths import REPORTS
from stress.harness.processes import Processes
from stress.harness.stack import sample_db
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.line.store import connect_sync
from waitroom.lookup import sample
from waitroom.shared.processes import free_port

STUDENTS_IN_DB = 20_000
# Growth between the second and the last quarter of the run that still counts as
# flat: noise of a live process (allocator, caches) is a few per cent.
FLAT = 0.10


@dataclass
class Tally:
    arrived: int = 0
    served: int = 0
    wrong: int = 0
    gave_up: int = 0
    errors: int = 0
    status_5xx: int = 0
    busy_503: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)


async def student(
    http: aiohttp.ClientSession, base: str, k: int, rng: random.Random, tally: Tally
) -> None:
    """One student's journey as a JSON client: join, poll as told, look up, leave."""
    sheet = sample.candidate(sample.DEFAULT_SEED, k % STUDENTS_IN_DB)
    jar = aiohttp.CookieJar(unsafe=True)
    give_up_at = time.monotonic() + 600 if rng.random() >= 0.05 else time.monotonic() + 20
    headers = {"Accept": "application/json"}
    async with aiohttp.ClientSession(
        cookie_jar=jar, connector=http.connector, connector_owner=False
    ) as s:
        try:
            path = "/"
            while True:
                async with s.get(base + path, headers=headers) as r:
                    body = await r.json(content_type=None)
                    _count(r.status, tally)
                state = body.get("state")
                if state in ("ready", "admitted"):
                    break
                if time.monotonic() > give_up_at:
                    tally.gave_up += 1
                    return
                await asyncio.sleep(float(body.get("retry_after_s") or 5))
                path = "/status" if state in ("waiting", "prequeue") else "/"
            form = {"roll": sheet.roll, "dob": sheet.dob.isoformat()}
            for _ in range(5):
                async with s.post(base + "/api/result", json=form, headers=headers) as r:
                    _count(r.status, tally)
                    answer = await r.json(content_type=None)
                if r.status == 200:
                    if answer.get("roll") == sheet.roll and answer.get("name") == sheet.name:
                        tally.served += 1
                    else:
                        tally.wrong += 1
                    return
                await asyncio.sleep(float(answer.get("retry_after_s") or 2))
            tally.gave_up += 1
        except (aiohttp.ClientError, TimeoutError, ValueError):
            tally.errors += 1


def _count(status: int, tally: Tally) -> None:
    if status == 503:
        tally.busy_503 += 1
    elif status >= 500:
        tally.status_5xx += 1


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    db = sample_db(STUDENTS_IN_DB)
    tally = Tally()
    rng = random.Random(args.seed)
    with (
        tempfile.TemporaryDirectory(prefix="waitroom-soak-") as tmp,
        EmbeddedRedis() as store,
        Processes(Path(tmp)) as procs,
    ):
        backend_port, port = free_port(), free_port()
        env = {
            **os.environ,
            "WAITROOM_MODE": "test",
            "WAITROOM_SECRET_KEYS": secrets.token_urlsafe(32),
            "WAITROOM_BACKEND_SECRET": secrets.token_urlsafe(32),
            "WAITROOM_REDIS_URL": store.url,
            "WAITROOM_BACKEND_URL": f"http://127.0.0.1:{backend_port}",
            "WAITROOM_TICKET_TTL_S": str(args.ticket_ttl),
            "WAITROOM_PASS_TTL_S": "120",
            "WAITROOM_JOIN_LIMIT": "0",  # every student comes from 127.0.0.1
            "WAITROOM_MAX_ACTIVE": "5000",
        }
        backend = procs.start(
            "backend",
            ["-m", "waitroom", "lookup", "serve", "--db", str(db), "--port", str(backend_port)],
            env,
        )
        gateway = procs.start(
            "gateway",
            [
                *("-m", "waitroom", "serve", "--port", str(port)),
                *("--workers", "2", "--rate", str(args.rate)),
            ],
            env,
        )
        procs.wait_ready(backend, backend_port, "/healthz", 60)
        procs.wait_ready(gateway, port, "/readyz", 60)
        info = connect_sync(store.url)
        base = f"http://127.0.0.1:{port}"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            tasks: set[asyncio.Task[None]] = set()
            started = time.monotonic()
            end = started + args.minutes * 60
            next_sample = started
            k = 0
            while time.monotonic() < end:
                now = time.monotonic()
                # Steady arrivals: how many should have come by now.
                due = int((now - started) * args.arrivals)
                while k < due:
                    task = asyncio.create_task(student(http, base, k, rng, tally))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    k += 1
                    tally.arrived += 1
                if now >= next_sample:
                    memory = info.info("memory")
                    state = info.hgetall("waitroom:{results}:state")
                    seq = int(state.get(b"seq", 0))
                    frontier = int(state.get(b"frontier", 0))
                    tally.samples.append(
                        {
                            "t": round(now - started, 1),
                            "gateway_rss_mb": round(tree_rss_mb(gateway), 1),
                            "backend_rss_mb": round(tree_rss_mb(backend), 1),
                            "redis_used_mb": round(memory["used_memory"] / 2**20, 2),
                            "redis_keys": int(info.dbsize()),
                            "waiting": seq - frontier,
                            "in_flight": len(tasks),
                            "served": tally.served,
                        }
                    )
                    last = tally.samples[-1]
                    print(
                        f"\r{last['t']:7.0f} s  arrived {tally.arrived:,}  served "
                        f"{tally.served:,}  waiting {last['waiting']}  gateway "
                        f"{last['gateway_rss_mb']} MB  redis {last['redis_used_mb']} MB "
                        f"{last['redis_keys']:,} keys",
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )
                    next_sample += args.every
                await asyncio.sleep(0.05)
            print(file=sys.stderr)
            if tasks:
                await asyncio.wait(tasks, timeout=60)
        info.close()
    return _verdict(args, tally)


def _verdict(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    samples = tally.samples
    n = len(samples)
    second = samples[n // 4 : n // 2] or samples
    last = samples[3 * n // 4 :] or samples

    def mean(rows: list[dict[str, Any]], key: str) -> float:
        return float(sum(r[key] for r in rows)) / len(rows)

    growth = {}
    for key in ("gateway_rss_mb", "backend_rss_mb", "redis_used_mb", "redis_keys"):
        before, after = mean(second, key), mean(last, key)
        growth[key] = {
            "second_quarter": round(before, 2),
            "last_quarter": round(after, 2),
            "growth": round(after / before - 1, 4) if before else 0.0,
            "flat": not before or after / before - 1 <= FLAT,
        }
    return {
        "scenario": "soak",
        "date": time.strftime("%Y-%m-%d"),
        "minutes": args.minutes,
        "arrivals_per_s": args.arrivals,
        "rate": args.rate,
        "ticket_ttl_s": args.ticket_ttl,
        "arrived": tally.arrived,
        "served": tally.served,
        "wrong_marksheets": tally.wrong,
        "gave_up": tally.gave_up,
        "client_errors": tally.errors,
        "status_5xx": tally.status_5xx,
        "busy_503": tally.busy_503,
        "growth": growth,
        "bounded": all(g["flat"] for g in growth.values()),
        "samples": samples,
    }


def _markdown(report: dict[str, Any]) -> str:
    rows = [
        f"| {key} | {g['second_quarter']:,} | {g['last_quarter']:,} | "
        f"{100 * g['growth']:+.1f} % | {'flat' if g['flat'] else 'GROWING'} |"
        for key, g in report["growth"].items()
    ]
    return "\n".join(
        [
            f"# Soak, {report['date']}: {report['minutes']} min of {report['arrivals_per_s']} "
            f"arrivals/s (rate {report['rate']}/s, tickets live {report['ticket_ttl_s']} s)",
            "",
            f"Arrived {report['arrived']:,}, served {report['served']:,} (wrong marksheets: "
            f"{report['wrong_marksheets']}), gave up {report['gave_up']:,}, client errors "
            f"{report['client_errors']}, 5xx other than busy {report['status_5xx']}, busy 503 "
            f"{report['busy_503']}.",
            "",
            "| measure | mean, 2nd quarter | mean, last quarter | growth | verdict |",
            "|---|---:|---:|---:|---|",
            *rows,
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stress.scenarios.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--arrivals", type=float, default=25.0, help="students per second")
    parser.add_argument("--rate", type=float, default=30.0, help="admissions per second")
    parser.add_argument("--ticket-ttl", type=int, default=300, help="seconds (>= 60)")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=None, help="report directory")
    args = parser.parse_args(argv)
    report = asyncio.run(soak(args))
    out = args.out or REPORTS / f"soak-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=1))
    markdown = _markdown(report)
    (out / "soak.md").write_text(markdown)
    print(markdown)
    print(f"report: {out}", file=sys.stderr)
    return (
        0
        if report["bounded"] and not report["status_5xx"] and not report["wrong_marksheets"]
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
