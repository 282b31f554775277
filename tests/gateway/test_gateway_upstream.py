"""The gateway's keep-alive client against real HTTP servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.servers import serving
from waitroom.gateway.upstream import Upstream, UpstreamError
from waitroom.shared.processes import die_with_parent, free_port

connections: set[object] = set()


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    connections.add(scope["client"])
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/chunked":  # no content-length: the server chunks it
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part1-", "more_body": True})
        await send({"type": "http.response.body", "body": b"part2"})
        return
    answer = scope["method"].encode() + b" " + scope["path"].encode() + b" " + body
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [
                (b"content-length", str(len(answer)).encode()),
                (b"x-seen", dict(scope["headers"]).get(b"x-token", b"-")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


async def test_reuses_connections_and_reads_both_framings() -> None:
    connections.clear()
    async with serving(echo) as server:
        upstream = Upstream(server.url, pool_size=4)
        for i in range(5):
            answer = await upstream.request(
                "POST", "/api/result", [(b"x-token", b"t")], f"body{i}".encode()
            )
            assert answer.status == 201
            assert answer.body == f"POST /api/result body{i}".encode()
            assert (b"x-seen", b"t") in answer.headers
        assert len(connections) == 1  # one keep-alive connection served all five
        chunked = await upstream.request("GET", "/chunked", [])
        assert chunked.body == b"part1-part2"
        await upstream.close()


async def test_a_restarted_upstream_is_retried_on_a_fresh_connection() -> None:
    port = free_port()
    upstream = Upstream(f"http://127.0.0.1:{port}", pool_size=4)
    async with serving(echo, port):
        answers = await asyncio.gather(*(upstream.request("GET", "/a", []) for _ in range(4)))
        assert all(a.status == 201 for a in answers)
    # Every pooled connection is now dead; the server comes back on the same port.
    async with serving(echo, port):
        for path in ("/b", "/c", "/d", "/e"):
            answer = await upstream.request("GET", path, [])
            assert answer.body == b"GET " + path.encode() + b" "
    await upstream.close()


async def test_waiting_for_a_free_connection_is_bounded() -> None:
    async def slow(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(0.8)
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-length", b"2")],
                }
            )
            await send({"type": "http.response.body", "body": b"ok"})

    async with serving(slow) as server:
        upstream = Upstream(server.url, pool_size=1, connect_timeout_s=0.3)
        results = await asyncio.gather(
            *(upstream.request("GET", "/", []) for _ in range(3)), return_exceptions=True
        )
        assert sum(1 for r in results if isinstance(r, UpstreamError)) == 2
        assert "connections busy" in str(next(r for r in results if isinstance(r, Exception)))
        await upstream.close()


async def test_down_or_slow_upstream_is_an_upstream_error() -> None:
    down = Upstream(f"http://127.0.0.1:{free_port()}", connect_timeout_s=0.5)
    with pytest.raises(UpstreamError, match="could not connect"):
        await down.request("GET", "/", [])

    async def stall(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(5)

    async with serving(stall) as server:
        slow = Upstream(server.url, read_timeout_s=0.3)
        with pytest.raises(UpstreamError, match=r"no answer within 0\.3s"):
            await slow.request("GET", "/", [])
        await slow.close()


@pytest.fixture
def liar() -> Iterator[str]:
    """The misbehaving origin (tests/support/misbehaving_origin.py) in its own process."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.misbehaving_origin"],
        stdout=subprocess.PIPE,
        preexec_fn=die_with_parent,  # dies with the test run, even a killed one
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        yield f"http://127.0.0.1:{port}"
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def _ask(upstream: Upstream, path: str) -> bytes | None:
    """The answer's body, or None when the client refused the answer."""
    try:
        answer = await upstream.request("GET", path, [])
    except UpstreamError as exc:
        assert exc.kind == "protocol", exc
        return None
    assert answer.status == 200
    return answer.body


async def test_surplus_bytes_never_become_the_next_answer(liar: str) -> None:
    upstream = Upstream(liar, pool_size=1)
    try:
        # One connection at a time, so a surplus left on it would be read as the
        # very next answer: before the fix /ok/2 got "answer 1 (surplus)".
        assert await _ask(upstream, "/ok/0") == b"answer 0"
        assert await _ask(upstream, "/extra/1") is None  # its length was a lie
        assert await _ask(upstream, "/ok/2") == b"answer 2"
        assert await _ask(upstream, "/late/3") == b"answer 3"
        await asyncio.sleep(0.3)  # the surplus arrives while the connection is idle
        assert await _ask(upstream, "/ok/4") == b"answer 4"
        # Honest answers still share one kept-alive connection.
        before = await _ask(upstream, "/conns")
        for i in range(5, 10):
            assert await _ask(upstream, f"/ok/{i}") == f"answer {i}".encode()
        assert await _ask(upstream, "/conns") == before
    finally:
        await upstream.close()


async def test_under_load_every_student_gets_their_own_answer(liar: str) -> None:
    upstream = Upstream(liar, pool_size=8)
    kinds = ("ok", "ok", "extra")
    try:
        for _ in range(3):
            paths = [f"/{kinds[i % len(kinds)]}/{i}" for i in range(200)]
            bodies = await asyncio.gather(*(_ask(upstream, path) for path in paths))
            for path, body in zip(paths, bodies, strict=True):
                ident = path.rsplit("/", 1)[1]
                if path.startswith("/ok/"):
                    # Before the fix some of these read another request's answer.
                    assert body == f"answer {ident}".encode(), (path, body)
                else:
                    assert body in (None, f"answer {ident}".encode()), (path, body)
            await asyncio.sleep(0.2)
    finally:
        await upstream.close()


async def test_a_malformed_status_line_or_framing_is_refused() -> None:
    answers = {
        b"/garbage": b"garbageHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"/interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        b"/two-lengths": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok!",
        b"/both": b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
    }

    handled: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        writer.write(answers[head.split(b" ")[1]])
        await writer.drain()
        writer.close()
        await writer.wait_closed()
        handled.append(head)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(f"http://127.0.0.1:{port}")
    try:
        for path in answers:
            with pytest.raises(UpstreamError) as refused:
                await upstream.request("GET", path.decode(), [])
            assert refused.value.kind == "protocol", path
        # Every server side closed before the loop ends: nothing left for the GC.
        async with asyncio.timeout(5):
            while len(handled) < len(answers):
                await asyncio.sleep(0.01)
    finally:
        await upstream.close()
        server.close()
        await server.wait_closed()
