"""The lean layer over real HTTP: on both servers, with real gateway processes.

HEAD and WebSocket handling, what a page costs on the wire (gzip, the favicon,
only the headers that protect it), a body that trickles in, what the origin is
told of the student, and 2,000 arrivals at once across two gateway processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import redis

from tests.support.e2e import JSON, GatewayFactory, candidate_form, student, wait_for_credit
from tests.support.gateway_processes import node_env, start_node, stop_node, wait_up
from tests.support.servers import Server
from waitroom.line.keys import RoomKeys
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.processes import free_port

KEYS = RoomKeys("results")


@contextlib.contextmanager
def node(redis_url: str, backend: Server, server: str, **settings: Any) -> Iterator[str]:
    port = free_port()
    process = start_node(port, node_env(redis_url, backend.url, server=server, **settings))
    try:
        wait_up(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        err = stop_node(process)
        # Nothing a student did may have cost a traceback in the log.
        assert b"Traceback" not in err, err.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("server", ["hypercorn", "granian"])
async def test_head_takes_no_place_and_a_websocket_is_refused_cleanly(
    redis_url: str, redis_sync: redis.Redis, backend: Server, server: str
) -> None:
    with node(redis_url, backend, server, rate=0.001) as url:
        async with aiohttp.ClientSession() as s:
            for path in ("/", "/status"):
                async with s.head(url + path) as r:
                    assert r.status in (200, 202)
                    assert "Set-Cookie" not in r.headers
                    if server == "hypercorn":  # a header less on every answer
                        assert "Server" not in r.headers
                    assert await r.read() == b""
            assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 0
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await s.ws_connect(url + "/")
            assert refused.value.status == 403
        # A HEAD from someone in line is answered as a GET, without a body.
        async with student() as s:
            async with s.get(url + "/", headers=JSON) as r:
                assert r.status == 202
            async with s.head(url + "/") as r:
                assert r.status == 200 and int(r.headers["Retry-After"]) >= 1
                assert r.headers["Content-Type"].startswith("text/html")
                assert await r.read() == b""
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 1


async def test_pages_are_gzipped_and_carry_only_the_headers_that_protect_them(
    gateway: GatewayFactory,
) -> None:
    async with gateway(rate=0.001) as gw, student() as s:
        await wait_for_credit(gw.url)
        async with s.get(
            gw.url + "/", headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as r:
            raw = await r.read()
            assert r.headers["Content-Encoding"] == "gzip"
            page = gzip.decompress(raw).decode()
            assert 'data-position="1"' in page and len(raw) < len(page) * 0.6
            assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
            assert r.headers["X-Content-Type-Options"] == "nosniff"
            assert '<meta name="referrer" content="same-origin">' in page
            assert "Vary" not in r.headers  # no-store: no cache to tell
            icon = page.split('rel="icon" href="')[1].split('"')[0]
        async with s.get(gw.url + icon) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/svg+xml"
            assert "immutable" in r.headers["Cache-Control"]
        async with s.get(gw.url + "/favicon.ico") as r:
            assert r.status == 200 and b"<svg" in await r.read()
        # A hashed asset is compressed once, and says what the copy depended on.
        css = page.split('rel="stylesheet" href="')[1].split('"')[0]
        async with s.get(
            gw.url + css, headers={"Accept-Encoding": "gzip"}, auto_decompress=False
        ) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert r.headers["Vary"] == "accept-encoding"
        async with s.get(gw.url + css, headers={"Accept-Encoding": "identity"}) as r:
            assert "Content-Encoding" not in r.headers
            assert b"{" in await r.read()


async def test_a_body_that_trickles_in_meets_a_deadline(gateway: GatewayFactory) -> None:
    async with gateway(rate=50.0, body_timeout_s=1.0) as gw, student() as s:
        await wait_for_credit(gw.url)
        async with s.get(gw.url + "/", headers=JSON) as r:
            assert r.status == 200
        admission = {c.key: c.value for c in s.cookie_jar}[PASS_COOKIE]
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(
                b"POST /api/result HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\nCookie: "
                + f"{PASS_COOKIE}={admission}".encode()
                + b"\r\n\r\n{"
            )
            await writer.drain()
            started = time.monotonic()
            answer = asyncio.create_task(reader.read(400))
            while not answer.done() and time.monotonic() - started < 5:
                await asyncio.sleep(0.5)  # a byte every half second: never the whole body
                with contextlib.suppress(ConnectionError):
                    writer.write(b" ")
                    await writer.drain()
            head = await asyncio.wait_for(answer, 5)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert b"did not arrive within 1 s" in head
            assert time.monotonic() - started < 3
        finally:
            writer.close()


async def test_the_origin_hears_the_students_language_and_what_is_left_of_the_turn(
    gateway: GatewayFactory,
) -> None:
    async with gateway(rate=50.0, pass_max_lookups=5) as gw, student() as s:
        await wait_for_credit(gw.url)
        async with s.get(gw.url + "/?lang=hi") as r:  # admitted at once: the form
            assert r.status == 200
            form = await r.text()
        assert 'lang="hi"' in form
        async with s.post(gw.url + "/result", data=candidate_form(2)) as r:
            assert r.status == 200
            sheet = await r.text()
        # Said in Hindi, since the student chose it at the door (the wr_lang cookie),
        # with the lookups this pass has left after this one, and until when.
        assert 'lang="hi"' in sheet
        assert "आपके पास 4 खोजें बाकी हैं" in sheet and "datetime=" in sheet


async def test_2000_arrivals_across_two_gateway_processes_get_one_line(
    redis_url: str, redis_sync: redis.Redis, backend: Server
) -> None:
    with (
        node(redis_url, backend, "hypercorn", rate=0.001) as a,
        node(redis_url, backend, "hypercorn", rate=0.001) as b,
    ):
        connector = aiohttp.TCPConnector(limit=400)
        async with aiohttp.ClientSession(connector=connector) as s:

            async def arrive(url: str) -> tuple[int, str]:
                async with s.get(url + "/", headers=JSON) as r:
                    assert r.status == 202, r.status
                    body = await r.json()
                    return int(body["position"]), r.cookies[TICKET_COOKIE].value

            waves: dict[str, list[list[int]]] = {a: [], b: []}
            tickets: list[tuple[int, str, str]] = []
            for _ in range(4):  # four waves of 250 to each node at once
                results = await asyncio.gather(*(arrive(url) for url in (a, b) for _ in range(250)))
                for i, (position, ticket) in enumerate(results):
                    url = a if i < 250 else b
                    tickets.append((position, ticket, url))
                waves[a].append([p for p, _ in results[:250]])
                waves[b].append([p for p, _ in results[250:]])
            positions = sorted(p for p, _, _ in tickets)
            assert positions == list(range(1, 2001))  # one line, gap-free, no place twice
            for url in (a, b):  # a later wave never goes before an earlier one
                for earlier, later in zip(waves[url], waves[url][1:], strict=False):
                    assert max(earlier) < min(later)
            # Now admit them all, and watch the frontier only ever move forward.
            redis_sync.hset(KEYS.config, mapping={"rate": "2000", "max_active": "100000"})
            seen: list[int] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                async with s.get(a + "/queue/state") as r:
                    seen.append((await r.json())["frontier"])
                if seen[-1] >= 2000:
                    break
                await asyncio.sleep(0.05)
            assert seen[-1] == 2000 and seen == sorted(seen)

            async def trade(ticket: str, url: str) -> int:
                headers = {**JSON, "Cookie": f"{TICKET_COOKIE}={ticket}"}
                async with s.get(url + "/", headers=headers) as r:
                    assert (await r.json())["state"] == "admitted"
                    return r.status

            # Each ticket is traded on the other node: the line is one, not two.
            statuses = await asyncio.gather(
                *(trade(t, b if url == a else a) for _, t, url in tickets)
            )
            assert statuses == [200] * 2000
            assert int(redis_sync.hget(KEYS.state, "shown") or 0) == 2000


@pytest.mark.parametrize("server", ["hypercorn", "granian"])
async def test_a_worker_holds_every_waiting_students_connection(
    redis_url: str, redis_sync: redis.Redis, backend: Server, server: str
) -> None:
    """Each student in line keeps a connection open while they wait. granian's default
    cap (backlog / workers) left the student past it unanswered until someone left."""
    with node(redis_url, backend, server, rate=0.001, backlog=128) as url:
        port = int(url.rsplit(":", 1)[1])
        held: list[asyncio.StreamWriter] = []

        async def poll() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            held.append(writer)
            writer.write(b"GET /queue/state HTTP/1.1\r\nHost: x\r\n\r\n")
            await writer.drain()
            return await reader.readuntil(b"\r\n\r\n")

        try:
            for _ in range(3):  # 450 open connections, three times the backlog
                heads = await asyncio.wait_for(asyncio.gather(*(poll() for _ in range(150))), 10)
                assert all(h.startswith(b"HTTP/1.1 200") for h in heads)
        finally:
            for writer in held:
                writer.close()
