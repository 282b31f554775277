"""Faults survived, against real processes: Redis, the lookup backend and gateway nodes
dying or misbehaving mid-traffic, and nodes whose clocks disagree.

What a student may see in a fault is fixed: a waiting student's status (200/202,
"reconnecting" while Redis is away), a calm 503 with Retry-After (a newcomer while
Redis is away; "busy, retrying" while the backend is), never a 500 or a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
import redis.asyncio as aioredis

from tests.support.e2e import JSON, candidate_form, student, wait_for_credit
from tests.support.gateway_processes import kill_node, node_env, start_node, stop_node, wait_up
from tests.support.gateway_support import BACKEND_KEYS, make_settings
from tests.support.servers import serving
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.gateway.app import create_app
from waitroom.line.keys import RoomKeys
from waitroom.room import tickets
from waitroom.room.tickets import PASS_COOKIE
from waitroom.shared.processes import free_port

KEYS = RoomKeys("results")


@dataclass
class Seen:
    """Every answer a crowd got, to check that none was a fault the student sees."""

    answers: list[tuple[str, int, str, dict[str, str]]] = field(default_factory=list)

    async def get(self, session: aiohttp.ClientSession, url: str, **kwargs: Any) -> tuple[int, Any]:
        async with session.get(url, **kwargs) as response:
            return await self._record(url, response)

    async def post(
        self, session: aiohttp.ClientSession, url: str, **kwargs: Any
    ) -> tuple[int, Any]:
        async with session.post(url, **kwargs) as response:
            return await self._record(url, response)

    async def _record(self, url: str, response: aiohttp.ClientResponse) -> tuple[int, Any]:
        text = await response.text()
        self.answers.append((url, response.status, text, dict(response.headers)))
        if "json" in (response.content_type or ""):
            return response.status, await response.json()
        return response.status, text

    def check(self, allowed: set[int]) -> None:
        for url, code, text, headers in self.answers:
            assert code in allowed, (url, code, text[:300])
            assert "Traceback" not in text and "Internal Server Error" not in text, (url, text)
            if code == 503:
                assert int(headers["Retry-After"]) >= 1, (url, headers)


async def _frontier(client: aioredis.Redis) -> int:
    value = await client.hget(KEYS.state, "frontier")
    return int(value) if value is not None else -1


# -- Redis -----------------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["with its data", "empty"])
async def test_redis_dies_mid_spike_and_comes_back(backend: Any, restart: str) -> None:
    rate = 20.0
    with EmbeddedRedis() as server:
        settings = make_settings(server.url, rate=rate, backend_url=backend.url)
        probe = aioredis.Redis.from_url(server.url)
        async with serving(create_app(settings)) as a, serving(create_app(settings)) as b:
            nodes = (a.url, b.url)
            await wait_for_credit(a.url)
            await wait_for_credit(b.url)
            seen = Seen()
            crowd = [student() for _ in range(50)]
            late = [student() for _ in range(10)]
            try:
                # The spike: fifty arrivals at once on two nodes.
                joined = await asyncio.gather(
                    *(seen.get(s, nodes[i % 2] + "/", headers=JSON) for i, s in enumerate(crowd))
                )
                place = {
                    i: body["position"] for i, (code, body) in enumerate(joined) if code == 202
                }
                assert len(place) >= 30
                stop_polling = asyncio.Event()

                async def poll(i: int) -> None:  # every waiting student polls, on either node
                    while not stop_polling.is_set():
                        code, body = await seen.get(crowd[i], nodes[(i + 1) % 2] + "/status")
                        assert code in (200, 202), (code, body)  # never a 5xx while waiting
                        if body["state"] == "admitted":  # traded the ticket for a pass
                            return
                        assert body["position"] == place[i], (i, body)
                        await asyncio.sleep(0.2)

                pollers = [asyncio.create_task(poll(i)) for i in place]
                await asyncio.sleep(0.5)
                before = await _frontier(probe)
                if restart == "empty":
                    server.kill()  # a crash: nothing saved
                else:
                    server.stop(save=True)
                await asyncio.sleep(0.3)
                # Mid-outage: newcomers get the calm page, waiters keep polling.
                for i, s in enumerate(late[:5]):
                    code, body = await seen.get(s, nodes[i % 2] + "/", headers=JSON)
                    assert code == 503 and body["state"] == "unavailable"
                await asyncio.sleep(1.0)
                server.start()
                await probe.aclose()
                probe = aioredis.Redis.from_url(server.url)

                # The line is back (restored from the nodes' memory when empty) and
                # moves at the configured rate: nobody is admitted in a flood.
                samples: list[tuple[float, int]] = []
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    frontier = await _frontier(probe)
                    samples.append((time.monotonic(), frontier))
                    if frontier >= max(place.values()):
                        break
                    await asyncio.sleep(0.1)
                first = next((t, f) for t, f in samples if f >= 0)
                # Restored from a node's last read (a refresh old at most): nobody who
                # was let in is sent far back.
                assert first[1] >= before - (rate / 2 + 2), (first, before)
                for t, f in samples:
                    if f >= 0:
                        # one second of credit at most as a burst, then the rate
                        assert f - first[1] <= rate * (t - first[0]) + rate + 2, samples

                # Nobody stranded: every waiting student reaches the front and gets in.
                for i in place:
                    got_in = False
                    while not got_in:
                        assert time.monotonic() < deadline, f"student {i} stranded"
                        code, body = await seen.get(crowd[i], nodes[i % 2] + "/", headers=JSON)
                        got_in = code == 200 and body["state"] == "admitted"
                        if not got_in:
                            await asyncio.sleep(0.2)
                    code, _ = await seen.post(
                        crowd[i], nodes[(i + 1) % 2] + "/api/result", json=candidate_form(i % 40)
                    )
                    assert code == 200
                stop_polling.set()
                await asyncio.gather(*pollers)
                # New places come after every place given before the fault.
                for i, s in enumerate(late[5:]):
                    code, body = await seen.get(s, nodes[i % 2] + "/", headers=JSON)
                    assert code in (200, 202)
                    if code == 202:
                        assert body["position"] > max(place.values())
            finally:
                for s in crowd + late:
                    await s.close()
                await probe.aclose()
            seen.check({200, 202, 503})


# -- the lookup backend ----------------------------------------------------------------


@contextlib.contextmanager
def _backend_process(db: Path, port: int) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAITROOM_")}
    env["WAITROOM_BACKEND_SECRET"] = BACKEND_KEYS[0]  # never on the command line (`ps`)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "waitroom", "lookup", "serve"),
            *("--db", str(db), "--port", str(port)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield process
    finally:
        kill_node(process)


async def _wait_backend(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError("backend did not come up")


async def test_backend_killed_mid_traffic_then_back(
    redis_url: str, results_db: Path, redis_sync: Any
) -> None:
    port = free_port()
    settings = make_settings(
        redis_url,
        rate=50.0,
        backend_url=f"http://127.0.0.1:{port}",
        backend_connect_timeout_s=0.5,
        backend_read_timeout_s=2.0,
        # More attempts than this fail during the outage: they must not count.
        pass_max_lookups=6,
    )
    seen = Seen()
    async with serving(create_app(settings)) as gw:
        await wait_for_credit(gw.url)
        students = [student() for _ in range(8)]
        try:
            with _backend_process(results_db, port) as process:
                await _wait_backend(port)
                for s in students:
                    await seen.get(s, gw.url + "/")
                passes = [{c.key: c.value for c in s.cookie_jar}[PASS_COOKIE] for s in students]
                stop = asyncio.Event()
                ok_after: dict[int, int] = {}

                async def look_up(i: int) -> None:
                    while not stop.is_set():
                        html = i % 2 == 0
                        if html:
                            code, _ = await seen.post(
                                students[i], gw.url + "/result", data=candidate_form(i)
                            )
                        else:
                            code, body = await seen.post(
                                students[i], gw.url + "/api/result", json=candidate_form(i % 40)
                            )
                            assert code == 200 or body["state"] == "busy"
                        if code == 200 and process.poll() is not None:
                            ok_after[i] = ok_after.get(i, 0) + 1
                            return  # back in business
                        await asyncio.sleep(0.25 if code == 200 else 0.1)

                tasks = [asyncio.create_task(look_up(i)) for i in range(len(students))]
                await asyncio.sleep(0.5)
                await asyncio.to_thread(kill_node, process)  # SIGKILL mid-traffic
                await asyncio.sleep(1.5)  # well over ten attempts each while it is down
            with _backend_process(results_db, port):
                await _wait_backend(port)
                deadline = time.monotonic() + 10
                while len(ok_after) < len(students) and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                stop.set()
                await asyncio.gather(*tasks)
            # Every student got results again with the pass they had: none lost, and
            # the failed attempts did not use up their lookups.
            assert len(ok_after) == len(students), ok_after
            assert [{c.key: c.value for c in s.cookie_jar}[PASS_COOKIE] for s in students] == passes
        finally:
            for s in students:
                await s.close()
    seen.check({200, 503})
    busy = [a for a in seen.answers if a[1] == 503]
    assert busy, "the outage was never seen"
    for url, _, text, _ in busy:
        if url.endswith("/result") and "/api/" not in url:
            assert "retrying automatically" in text and "data-autosubmit" in text


async def _faulty_backend(mode: str) -> tuple[asyncio.Server, int]:
    """A raw TCP server that answers every request in one broken way."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            if mode == "garbage":
                writer.write(b"\x00\xffnot http at all\r\n\r\n")
            elif mode == "half a head":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-le")
            elif mode == "short body":
                writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"roll":')
            elif mode == "bad chunk":
                writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
            elif mode == "bad length":
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n")
            elif mode == "slow":
                await asyncio.sleep(3)
            elif mode.startswith("status "):
                code = mode.split()[1]
                body = b"Traceback (most recent call last): boom"
                writer.write(
                    f"HTTP/1.1 {code} X\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body
                )
            elif mode == "refuses the admission":
                body = b"not admitted"
                writer.write(
                    b"HTTP/1.1 403 Forbidden\r\nx-waitroom-refused: admission\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    "mode",
    [
        "closes at once",
        "garbage",
        "half a head",
        "short body",
        "bad chunk",
        "bad length",
        "slow",
        "status 500",
        "status 502",
        "status 503",
        "refuses the admission",
    ],
)
async def test_a_broken_backend_only_ever_shows_the_busy_page(
    redis_url: str, redis_sync: Any, mode: str
) -> None:
    server, port = await _faulty_backend(mode)
    settings = make_settings(
        redis_url,
        rate=50.0,
        backend_url=f"http://127.0.0.1:{port}",
        backend_read_timeout_s=0.5,
    )
    seen = Seen()
    try:
        async with serving(create_app(settings)) as gw, student() as s:
            await wait_for_credit(gw.url)
            code, text = await seen.get(s, gw.url + "/")
            assert code == 503 and "busy" in text
            code, body = await seen.post(s, gw.url + "/api/result", json=candidate_form())
            assert code == 503 and body == {"state": "busy", "retry_after_s": 5}
            code, text = await seen.post(s, gw.url + "/result", data=candidate_form())
            assert code == 503 and "retrying automatically" in text
            assert candidate_form()["roll"] in text  # the form is kept for the retry
    finally:
        server.close()
        await server.wait_closed()
    seen.check({503})


# -- gateway nodes -----------------------------------------------------------------------


def _holder_node(client: redis.Redis, nodes: dict[int, subprocess.Popen[bytes]]) -> int:
    """Port of the node whose worker holds the pacer lease (its id has the pid)."""
    holder = client.get(KEYS.lease)
    assert holder is not None
    pid = int(holder.decode().split(":")[1])
    for port, process in nodes.items():
        if pid == process.pid or _parent(pid) == process.pid:
            return port
    raise AssertionError(f"lease holder {holder!r} is no node of ours")


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[1])


@contextlib.asynccontextmanager
async def _nodes(
    count: int, env: dict[str, str], offsets: list[float | None]
) -> AsyncIterator[dict[int, subprocess.Popen[bytes]]]:
    nodes = {free_port(): None for _ in range(count)}
    started: dict[int, subprocess.Popen[bytes]] = {}
    try:
        for port, offset in zip(nodes, offsets, strict=True):
            started[port] = start_node(port, env, offset)
        for port, process in started.items():
            await asyncio.to_thread(wait_up, port, process)
        yield started
    finally:
        for process in started.values():
            err = stop_node(process)
            assert b"Traceback" not in err, err.decode(errors="replace")[-3000:]


async def test_a_node_dies_and_the_other_keeps_admitting_at_the_rate(
    redis_url: str, redis_sync: redis.Redis, backend: Any
) -> None:
    rate = 6.0
    env = node_env(redis_url, backend.url, rate=rate, pacer_lease_s=1.0)
    async with _nodes(2, env, [None, None]) as nodes:
        ports = list(nodes)
        seen = Seen()
        # Enough that the line is still long when the rate is measured, after the
        # joins, the takeover and its one-second burst.
        crowd = [student() for _ in range(50)]
        try:
            joined = [
                await seen.get(s, f"http://127.0.0.1:{ports[i % 2]}/", headers=JSON)
                for i, s in enumerate(crowd)
            ]
            place = {i: body["position"] for i, (code, body) in enumerate(joined) if code == 202}
            assert len(place) >= 40
            victim = _holder_node(redis_sync, nodes)
            survivor = next(p for p in ports if p != victim)
            await asyncio.to_thread(kill_node, nodes[victim])
            base = f"http://127.0.0.1:{survivor}"
            # The lease lapses (1 s) and the survivor takes over the pacing.
            deadline = time.monotonic() + 5
            while _holder_node_or_none(redis_sync, nodes) != survivor:
                assert time.monotonic() < deadline, "nobody took over the pacer"
                await asyncio.sleep(0.1)
            start_f, started = int(redis_sync.hget(KEYS.state, "frontier") or 0), time.monotonic()
            await asyncio.sleep(2.0)
            end_f, ended = int(redis_sync.hget(KEYS.state, "frontier") or 0), time.monotonic()
            assert end_f < max(place.values()), "the line ran out while measuring"
            achieved = (end_f - start_f) / (ended - started)
            assert abs(achieved - rate) <= 0.25 * rate, achieved
            # Every place given by either node holds on the survivor, and the line
            # goes on moving through them in order (the next twelve get in).
            for i in place:
                code, body = await seen.get(crowd[i], base + "/status")
                assert body["position"] == place[i]
            deadline = time.monotonic() + 15
            for i in sorted(place, key=place.__getitem__)[:12]:
                while True:
                    code, body = await seen.get(crowd[i], base + "/", headers=JSON)
                    if code == 200:
                        assert body["state"] == "admitted"
                        break
                    assert time.monotonic() < deadline, f"student {i} stranded"
                    await asyncio.sleep(0.2)
        finally:
            for s in crowd:
                await s.close()
        seen.check({200, 202})


def _holder_node_or_none(client: redis.Redis, nodes: dict[int, subprocess.Popen[bytes]]) -> int:
    with contextlib.suppress(AssertionError, FileNotFoundError, ValueError, IndexError):
        return _holder_node(client, nodes)
    return -1


async def test_nodes_with_skewed_clocks_admit_by_redis_time_and_honour_each_other(
    redis_url: str, redis_sync: redis.Redis, backend: Any
) -> None:
    rate = 4.0
    env = node_env(redis_url, backend.url, rate=rate, pacer_lease_s=1.0)
    # One node 4 s ahead, one 4 s behind: 8 s apart.
    async with _nodes(2, env, [4.0, -4.0]) as nodes:
        ahead, behind = (f"http://127.0.0.1:{port}" for port in nodes)
        seen = Seen()
        crowd = [student() for _ in range(30)]
        try:
            joined = [
                await seen.get(s, (ahead, behind)[i % 2] + "/", headers=JSON)
                for i, s in enumerate(crowd)
            ]
            place = {i: body["position"] for i, (code, body) in enumerate(joined) if code == 202}
            assert len(place) >= 20
            # A ticket from one node is honoured on the other: same place, no notice.
            for i in place:
                code, body = await seen.get(crowd[i], (behind, ahead)[i % 2] + "/status")
                assert body["position"] == place[i] and "notice" not in body, body
            # Admission follows Redis's clock: the configured rate whoever paces.
            start_f, started = int(redis_sync.hget(KEYS.state, "frontier") or 0), time.monotonic()
            await asyncio.sleep(2.0)
            end_f, ended = int(redis_sync.hget(KEYS.state, "frontier") or 0), time.monotonic()
            assert end_f < max(place.values()), "the line ran out while measuring"
            achieved = (end_f - start_f) / (ended - started)
            assert abs(achieved - rate) <= 0.25 * rate, achieved
            # Nobody is early: a student is ready exactly when the frontier has passed them.
            for i in place:
                code, body = await seen.get(crowd[i], (behind, ahead)[i % 2] + "/status")
                if body["state"] == "ready":
                    assert place[i] <= int(redis_sync.hget(KEYS.state, "frontier") or 0)
            # A pass from the node ahead works on the node behind, and back.
            deadline = time.monotonic() + 15
            admitted = 0
            for i in sorted(place, key=place.__getitem__)[:4]:
                while True:
                    code, body = await seen.get(crowd[i], (ahead, behind)[i % 2] + "/")
                    if code == 200:
                        break
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.2)
                for node in (behind, ahead):
                    code, body = await seen.post(
                        crowd[i], node + "/api/result", json=candidate_form(i % 40)
                    )
                    assert code == 200, body
                admitted += 1
            assert admitted == 4
        finally:
            for s in crowd:
                await s.close()
        seen.check({200, 202})


# -- what an empty Redis forgets ------------------------------------------------------


async def test_an_empty_redis_forgets_spent_tickets_and_used_lookups_once(backend: Any) -> None:
    """The documented limit of "Redis back empty" (README, beside the fault table).

    The marks that a ticket was traded and the lookup counts per pass live only in
    Redis. After Redis comes back empty, a copy of a spent ticket buys one more pass
    and a used-up pass gets a fresh allowance; each only once per loss of data, as
    the new marks are kept again, and the pass still ends when it was going to.
    """
    limit = 2
    with EmbeddedRedis() as server:
        settings = make_settings(server.url, rate=2.0, backend_url=backend.url)
        settings = dataclasses.replace(settings, pass_max_lookups=limit)
        async with (
            serving(create_app(settings)) as gw,
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as bare,
        ):
            await wait_for_credit(gw.url)
            crowd = [student() for _ in range(4)]
            try:
                for s in crowd:  # the first is let in at once; the others wait in line
                    await _ask_json(s, gw.url + "/")
                last = crowd[-1]
                ticket = _cookie(last, tickets.TICKET_COOKIE)
                deadline = time.monotonic() + 15
                while (await _ask_json(last, gw.url + "/"))[1]["state"] != "admitted":
                    assert time.monotonic() < deadline, "never admitted"
                    await asyncio.sleep(0.2)
                pass_token = _cookie(last, PASS_COOKIE)
            finally:
                for s in crowd:
                    await s.close()

            async def replay_ticket() -> str:
                copy = (tickets.TICKET_COOKIE, ticket)
                _, body = await _ask_json(bare, gw.url + "/", cookie=copy)
                return str(body["state"])

            async def look_up() -> int:
                code, _ = await _ask_json(
                    bare,
                    gw.url + "/api/result",
                    cookie=(PASS_COOKIE, pass_token),
                    json=candidate_form(1),
                )
                return code

            # Before the fault: a copy of the spent ticket is a new place at the
            # back, and the pass's lookups are used up.
            assert await replay_ticket() != "admitted"
            assert [await look_up() for _ in range(limit + 1)] == [200] * limit + [429]

            server.kill()  # a crash: nothing saved
            server.start()
            # Joins restore the line. Until every pooled Redis connection has been
            # replaced, a call may fail, and spending and counting fail open: wait
            # until a burst of joins all succeed, so what follows is the steady state.
            deadline = time.monotonic() + 15
            while True:
                burst = [_ask_json(bare, gw.url + "/") for _ in range(20)]
                if all(code != 503 for code, _ in await asyncio.gather(*burst)):
                    break
                assert time.monotonic() < deadline, "the line was never restored"
                await asyncio.sleep(0.2)

            # After it, once: the copy buys a pass, the used-up pass looks up again.
            assert await replay_ticket() == "admitted"
            assert await replay_ticket() != "admitted"
            assert [await look_up() for _ in range(limit + 1)] == [200] * limit + [429]


def _cookie(session: aiohttp.ClientSession, name: str) -> str:
    return next(c.value for c in session.cookie_jar if c.key == name)


async def _ask_json(
    session: aiohttp.ClientSession,
    url: str,
    *,
    cookie: tuple[str, str] | None = None,
    json: dict[str, str] | None = None,
) -> tuple[int, Any]:
    headers = dict(JSON)
    if cookie is not None:
        headers["Cookie"] = f"{cookie[0]}={cookie[1]}"
    method = session.post if json is not None else session.get
    async with method(url, headers=headers, json=json) as response:
        body = await response.json(content_type=None) if response.content_length != 0 else {}
        assert response.status in (200, 202, 429, 503), (url, response.status, body)
        return response.status, body
