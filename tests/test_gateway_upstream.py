"""The gateway's keep-alive client against real HTTP servers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.servers import free_port, serving
from waitroom.upstream import Upstream, UpstreamError

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
