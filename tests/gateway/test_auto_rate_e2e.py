"""``waitroom serve --rate auto`` in front of a legacy origin, every part a real process.

The origin is ``waitroom lookup serve --capacity 40``: four workers, each lookup
holding one for 100 ms, a bounded backlog, 500s and 502s past it (its form is
answered at once). The gateway knows none of that. A crowd far larger than a minute
of admission joins at once; each student, told by the public queue state that
their turn came, loads the form a moment later (trading the ticket for a pass) and
looks the result up. Within a minute the auto rate must admit at 70-110 % of the
origin's capacity and the origin must answer no 5xx after that, by the origin's
own counters.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from tests.support.e2e import candidate_form
from tests.support.gateway_processes import node_env, wait_up
from tests.support.gateway_support import BACKEND_KEYS
from waitroom.line.keys import RoomKeys
from waitroom.line.state import Search
from waitroom.shared.processes import free_port, stop_group

CAPACITY = 40.0  # lookups a second the origin does
CROWD = 3200  # more than 70 s of admission at 110 % of the capacity
RUN_S = 66.0
# Judged over this stretch: converged by its start, held to its end.
JUDGED = (51.0, RUN_S)
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}


@dataclass
class Student:
    k: int
    position: int = 0
    cookies: dict[str, str] = field(default_factory=dict)

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}

    def keep(self, response: aiohttp.ClientResponse) -> None:
        for name, morsel in response.cookies.items():
            self.cookies[name] = morsel.value


@dataclass
class Tally:
    looked_up: int = 0
    busy: int = 0  # the gateway's "busy, retrying" answers (the origin failed)
    failed: list[str] = field(default_factory=list)


def _origin(db: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "waitroom", "lookup", "serve", "--db", str(db)]
    argv += ["--port", str(port), "--capacity", str(CAPACITY), "--pool-workers", "4"]
    # A proxy that gives up after 5 s, not nginx's 60, so a 502 is seen in the test.
    argv += ["--proxy-timeout", "5"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    env.update(WAITROOM_MODE="test", WAITROOM_BACKEND_SECRET=BACKEND_KEYS[0])
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)


def _gateway(redis_url: str, origin_url: str, port: int) -> subprocess.Popen[bytes]:
    # Nothing about the rate but auto: the search finds it (its most is 1000/s).
    env = node_env(redis_url, origin_url)
    argv = [sys.executable, "-m", "waitroom", "serve", "--port", str(port), "--rate", "auto"]
    return subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )


@pytest.fixture
def stack(
    tmp_path: Path, redis_url: str, redis_sync: Any, results_db: Path
) -> Iterator[tuple[str, str]]:
    origin_port, gateway_port = free_port(), free_port()
    origin = _origin(results_db, origin_port, tmp_path / "origin.log")
    gateway = _gateway(redis_url, f"http://127.0.0.1:{origin_port}", gateway_port)
    try:
        wait_up(gateway_port, gateway)
        yield f"http://127.0.0.1:{gateway_port}", f"http://127.0.0.1:{origin_port}"
    finally:
        stop_group(gateway)
        stop_group(origin)
        if gateway.stderr is not None:
            gateway.stderr.close()


async def _counters(http: aiohttp.ClientSession, origin: str) -> dict[str, Any]:
    async with http.get(origin + "/_origin/counters") as response:
        body: dict[str, Any] = await response.json()
        return body


def _errors(counters: dict[str, Any]) -> int:
    return sum(n for status, n in counters["lookups"].items() if int(status) >= 500)


@pytest.mark.slow
@pytest.mark.timeout(150)
async def test_rate_auto_finds_a_legacy_origins_capacity_within_a_minute(
    stack: tuple[str, str], redis_sync: redis.Redis
) -> None:
    gateway, origin = stack
    rng = random.Random(12)
    tally = Tally()
    trace: list[str] = []
    judged: dict[float, dict[str, Any]] = {}
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(
        connector=connector, cookie_jar=aiohttp.DummyCookieJar()
    ) as http:
        started = time.monotonic()

        async def join(student: Student) -> None:
            async with http.get(gateway + "/", headers=JSON) as response:
                body = await response.json(content_type=None)
                student.keep(response)
            # The first few find nobody waiting and are admitted at once.
            student.position = int(body.get("position") or 0)

        async def look_up(student: Student) -> None:
            # Told by the page a moment after the frontier passed them (its polls
            # are seconds apart); the form first (the ticket becomes a pass), a
            # moment to type, then the lookup, tried again a few times if busy.
            await asyncio.sleep(rng.uniform(0.3, 2.5))
            async with http.get(gateway + "/", headers={**HTML, **student.header()}) as r:
                await r.read()
                student.keep(r)
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            for _ in range(3):
                async with http.post(
                    gateway + "/api/result",
                    json=candidate_form(student.k % 40),
                    headers={**JSON, **student.header()},
                ) as r:
                    await r.read()
                    if r.status == 200:
                        tally.looked_up += 1
                        return
                    if r.status != 503:
                        tally.failed.append(f"{r.status} {r.url}")
                        return
                tally.busy += 1
                await asyncio.sleep(rng.uniform(2.0, 4.0))

        crowd = [Student(k) for k in range(CROWD)]
        for block in range(0, CROWD, 200):
            await asyncio.gather(*(join(s) for s in crowd[block : block + 200]))
        crowd.sort(key=lambda s: s.position)

        # One reader of the public queue state stands for every student's page.
        pending = list(crowd)
        lookups: set[asyncio.Task[None]] = set()
        next_second = 1.0
        keys = RoomKeys("results")
        while (elapsed := time.monotonic() - started) < RUN_S:
            async with http.get(gateway + "/queue/state") as response:
                frontier = int((await response.json())["frontier"])
            while pending and pending[0].position <= frontier:
                task = asyncio.create_task(look_up(pending.pop(0)))
                lookups.add(task)
                task.add_done_callback(lookups.discard)
            if elapsed >= next_second:
                next_second += 1.0
                state = {k.decode(): v.decode() for k, v in redis_sync.hgetall(keys.state).items()}
                search = Search.from_json(state.get("search", "{}"))
                counters = await _counters(http, origin)
                trace.append(
                    f"{elapsed:5.1f}s rate {state.get('effective_rate', '-'):>6} "
                    f"{search.phase:5} cap {search.capacity} origin {counters['lookups']} "
                    f"{state.get('governor_reason', '')}"
                )
                for edge in JUDGED:
                    if edge not in judged and elapsed >= edge:
                        judged[edge] = {"t": elapsed, "state": state, **counters}
            await asyncio.sleep(0.25)
        if len(judged) < len(JUDGED):  # the loop ended between two seconds
            judged[JUDGED[-1]] = {"t": time.monotonic() - started, **await _counters(http, origin)}
        for task in list(lookups):
            task.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)

    log = "\n".join(trace)
    start, end = judged[JUDGED[0]], judged[JUDGED[1]]
    served = end["lookups"].get("200", 0) - start["lookups"].get("200", 0)
    per_s = served / (end["t"] - start["t"])
    assert 0.7 * CAPACITY <= per_s <= 1.1 * CAPACITY, f"{per_s:.1f} lookups/s\n{log}"
    assert _errors(end) == _errors(start), f"the origin answered 5xx after converging\n{log}"
    assert pending, "the crowd ran out: admission was not what limited the origin"
    assert tally.failed == [], tally.failed[:5]
    state = end.get("state") or start["state"]
    found = Search.from_json(state["search"]).capacity
    assert found is not None and 0.8 * CAPACITY <= found <= 1.15 * CAPACITY, log
    print(
        f"\nauto rate against a {CAPACITY:g} lookups/s origin: {per_s:.1f} lookups/s in "
        f"{JUDGED[0]:g}-{JUDGED[1]:g} s, found {found:.1f}; {tally}; "
        f"origin at {JUDGED[1]:g} s: {json.dumps(end['lookups'])}"
    )
    print(log)
