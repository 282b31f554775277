"""What the two framework-free ASGI layers share: the gateway's lean layer
(``waitroom.gateway.lean``) and the lookup backend (``waitroom.lookup.app``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def read_body(
    receive: Receive, headers: list[tuple[bytes, bytes]], limit: int
) -> bytes | None:
    """The request body, or None when it is over ``limit`` bytes.

    A declared Content-Length over the limit is refused before reading anything.
    Raises ``ClientGone`` when the client leaves first.
    """
    for name, value in headers:
        if name == b"content-length":
            try:
                if int(value) > limit:
                    return None
            except ValueError:
                pass  # the server rejects a malformed length before we get here
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
