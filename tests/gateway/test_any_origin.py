"""The gateway in front of a site that is not the lookup backend.

The origin is ``tests/support/shop_origin.py``, a school portal of its own shape (login
cookie, redirects, uploads, streams), run as a separate process. Every request
goes through a real gateway server: methods, query strings, headers both ways,
cookies, redirects, bodies whole and streamed, oversize bodies, answers whole and
streamed, a slow origin, one that breaks off mid-answer, paths that pass straight
through, and lookups counted only on the paths that are lookups.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from tests.support.e2e import GatewayFactory, student, wait_for_credit
from tests.support.gateway_processes import node_env, start_node, stop_node, wait_up
from tests.support.shop_origin import BIG_BYTES
from waitroom.line.keys import RoomKeys
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.processes import free_port

KEYS = RoomKeys("results")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("portal") / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.shop_origin", str(port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stderr=err,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the portal did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


@contextlib.asynccontextmanager
async def admitted(
    gateway: GatewayFactory, portal: str, **settings: object
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """A gateway in front of the portal, and a student who holds a pass."""
    values: dict[str, object] = {"rate": 50.0, "backend_url": portal}
    values.update(settings)
    async with gateway(**values) as gw, student() as s:
        await wait_for_credit(gw.url)
        async with s.get(gw.url + "/login") as r:
            assert r.status == 200 and "<form" in await r.text()
        assert PASS_COOKIE in {c.key for c in s.cookie_jar}
        yield gw.url, s


async def test_an_admitted_student_uses_the_portal_as_it_is(
    gateway: GatewayFactory, portal: str
) -> None:
    async with admitted(gateway, portal) as (url, s):
        # The portal's login: its cookie and its redirect reach the browser as sent.
        async with s.post(url + "/login", data={"name": "asha"}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/account"
            cookies = r.headers.getall("Set-Cookie")
            assert any(c.startswith("portal_session=asha") for c in cookies)
            assert any(c.startswith("portal_theme=dark") for c in cookies)
        async with s.get(url + "/account") as r:
            assert r.status == 200 and "Account of asha" in await r.text()
        # A redirect to the portal's own address is made relative: the browser stays
        # on the gateway.
        async with aiohttp.ClientSession() as stranger_with_a_pass:
            pass_token = {c.key: c.value for c in s.cookie_jar}[PASS_COOKIE]
            async with stranger_with_a_pass.get(
                url + "/account", cookies={PASS_COOKIE: pass_token}, allow_redirects=False
            ) as r:
                assert r.status == 302 and r.headers["Location"] == "/login?next=/account"
        # The portal's own 403 is its page, not the gateway's busy page.
        async with s.get(url + "/private") as r:
            assert r.status == 403 and await r.text() == "members only"


async def test_methods_queries_and_headers_pass_as_a_proxy_passes_them(
    gateway: GatewayFactory, portal: str
) -> None:
    async with admitted(gateway, portal) as (url, s):
        s.cookie_jar.update_cookies({"portal_session": "asha"})
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            body = f"{method} body".encode() if method not in ("GET", "OPTIONS") else b""
            async with s.request(
                method,
                url + "/echo?roll=21000001&name=%E0%A4%86%E0%A4%B6%E0%A4%BE&empty=",
                data=body or None,
                headers={
                    "X-Custom": "kept",
                    "X-Waitroom-Admission": "forged",
                    "X-Waitroom-Lookups-Left": "999",
                    "X-Forwarded-For": "6.6.6.6",
                    "Connection": "keep-alive, X-Hop",
                    "X-Hop": "this hop only",
                },
            ) as r:
                assert r.status == 200, method
                assert r.headers["X-Portal"] == "echo"
                seen = json.loads(await r.read())
            assert seen["method"] == method
            assert seen["query"] == "roll=21000001&name=%E0%A4%86%E0%A4%B6%E0%A4%BE&empty="
            assert seen["body_sha256"] == hashlib.sha256(body).hexdigest()
            headers = seen["headers"]
            assert headers["x-custom"] == "kept"
            assert "x-hop" not in headers  # named in Connection: this hop only
            assert headers["x-waitroom-admission"] != "forged"  # the gateway's own
            assert "x-waitroom-lookups-left" not in headers  # /echo is no lookup path
            # An untrusted client's X-Forwarded-For is replaced by what we saw.
            assert headers["x-forwarded-for"] == "127.0.0.1"
            assert headers["x-forwarded-proto"] == "http"
            assert headers["x-forwarded-host"] == url.removeprefix("http://")
            # The portal's cookie goes on; the gateway's ticket and pass never do.
            assert "portal_session=asha" in headers["cookie"]
            assert PASS_COOKIE not in headers["cookie"]
            assert TICKET_COOKIE not in headers["cookie"]
        # A path outside ASCII goes on as the client encoded it: the portal's own 404.
        async with s.get(url + "/%E0%A4%AA%E0%A4%B0%E0%A4%BF%E0%A4%A3%E0%A4%BE%E0%A4%AE") as r:
            assert r.status == 404
        # HEAD: what a GET would get, no body.
        async with s.head(url + "/big") as r:
            assert r.status == 200 and r.headers["Content-Length"] == str(BIG_BYTES)
            assert await r.read() == b""


async def test_bodies_and_answers_are_streamed_and_capped(
    gateway: GatewayFactory, portal: str
) -> None:
    upload = os.urandom(3 * 1024 * 1024)
    async with admitted(gateway, portal, max_body_bytes=4 * 1024 * 1024) as (url, s):
        form = aiohttp.FormData()
        form.add_field("note", "class XII")
        form.add_field("marksheet", io.BytesIO(upload), filename="marks.pdf")
        async with s.post(url + "/upload", data=form) as r:
            assert r.status == 200
            got = await r.json()
        assert got == {
            "name": "marks.pdf",
            "size": len(upload),
            "sha256": hashlib.sha256(upload).hexdigest(),
            "note": "class XII",
        }

        # A body of unknown length (chunked) is passed on chunked.
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(20):
                yield bytes([i]) * 20_000

        async with s.put(url + "/echo", data=pieces()) as r:
            seen = await r.json(content_type=None)
        expected = b"".join(bytes([i]) * 20_000 for i in range(20))
        assert seen["body_size"] == len(expected)
        assert seen["body_sha256"] == hashlib.sha256(expected).hexdigest()

        # Over the cap: refused with a message, whether declared or found out.
        async with s.post(url + "/upload", data=io.BytesIO(os.urandom(5 << 20))) as r:
            assert r.status == 413 and "4194304 bytes" in await r.text()

        async def endless() -> AsyncIterator[bytes]:
            for _ in range(100):
                yield b"z" * 65536

        with contextlib.suppress(aiohttp.ClientError):
            async with s.put(url + "/echo", data=endless()) as r:
                assert r.status == 413
        # The pass survives: the next request goes through.
        async with s.get(url + "/big") as r:
            body = await r.read()
        assert len(body) == BIG_BYTES and body[:256] == bytes(range(256))
        # A streamed answer arrives in its pieces.
        async with s.get(url + "/stream?parts=5") as r:
            assert r.status == 200 and "Content-Length" not in r.headers
            assert await r.text() == "".join(f"part {i}\n" for i in range(5))


async def test_a_slow_or_breaking_origin_never_shows_a_500(
    gateway: GatewayFactory, portal: str
) -> None:
    async with admitted(gateway, portal, backend_read_timeout_s=0.5) as (url, s):
        async with s.get(url + "/slow?s=2") as r:
            assert r.status == 503 and "busy" in await r.text()
        async with s.get(url + "/slow?s=0.05") as r:
            assert r.status == 200 and await r.text() == "finally"
        # Broken off after its first part: the connection ends without the body's
        # end, so the browser sees a failed download, never a short "complete" one.
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(url + "/cut") as r:
                assert r.status == 200
                await r.read()
        async with s.get(url + "/private") as r:
            assert r.status == 403
    async with gateway(rate=50.0, backend_url=f"http://127.0.0.1:{free_port()}") as gw:
        async with student() as s:
            await wait_for_credit(gw.url)
            async with s.get(gw.url + "/account") as r:
                assert r.status == 503 and "busy" in await r.text()


async def test_only_protected_paths_wait_and_only_lookup_paths_count(
    gateway: GatewayFactory, portal: str, redis_sync: redis.Redis
) -> None:
    async with (
        gateway(rate=0.001, backend_url=portal, protected_paths="/account,/echo*") as gw,
        student() as s,
    ):
        async with s.get(gw.url + "/public/info") as r:
            assert r.status == 200 and (await r.json())["open"] is True
        assert TICKET_COOKIE not in {c.key for c in s.cookie_jar}
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 0
        async with s.get(gw.url + "/echo/anything") as r:
            assert r.status == 200 and "/static/waitroom." in await r.text()  # waiting page
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 1
        # The admin's list (in the room's config) rules from the next refresh on.
        redis_sync.hset(KEYS.config, "protected_paths", "/echo*")
        await asyncio.sleep(0.6)
        async with s.get(gw.url + "/account", allow_redirects=False) as r:
            assert r.status == 302  # straight to the portal, which wants a login
    redis_sync.flushdb()  # a new room: the setting (everything) protected, nobody in line
    async with admitted(gateway, portal, lookup_paths="/echo", pass_max_lookups=2) as (url, s):
        for _ in range(2):
            async with s.post(url + "/echo", data=b"roll=1") as r:
                assert r.status == 200
        async with s.get(url + "/account", allow_redirects=False) as r:
            assert r.status == 302  # not a lookup: never limited
        async with s.post(url + "/echo", data=b"roll=1") as r:
            assert r.status == 429


@pytest.mark.parametrize("server", ["hypercorn", "granian"])
async def test_streams_and_a_broken_answer_on_both_servers(
    redis_url: str, portal: str, server: str
) -> None:
    port = free_port()
    process = start_node(port, node_env(redis_url, portal, server=server, rate=50.0))
    try:
        await asyncio.to_thread(wait_up, port, process)
        url = f"http://127.0.0.1:{port}"
        upload = os.urandom(2 * 1024 * 1024)
        async with student() as s:
            await wait_for_credit(url)
            async with s.get(url + "/login") as r:
                assert r.status == 200
            form = aiohttp.FormData()
            form.add_field("marksheet", io.BytesIO(upload), filename="m.pdf")
            async with s.post(url + "/upload", data=form) as r:
                assert (await r.json())["sha256"] == hashlib.sha256(upload).hexdigest()
            async with s.get(url + "/big") as r:
                assert len(await r.read()) == BIG_BYTES
            async with s.get(url + "/stream?parts=3") as r:
                assert await r.text() == "part 0\npart 1\npart 2\n"
            with pytest.raises(aiohttp.ClientPayloadError):
                async with s.get(url + "/cut") as r:
                    await r.read()
            async with s.get(url + "/private") as r:
                assert r.status == 403  # the worker is still well
    finally:
        err = stop_node(process)
    # A broken answer is a warning of ours, never a traceback.
    assert b"Traceback" not in err, err.decode(errors="replace")[-3000:]
    assert b"cut short" in err
