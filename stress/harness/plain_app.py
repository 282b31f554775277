"""The yardstick: a raw ASGI app that answers a constant body, nothing else.

Served on the same server as the gateway, it measures what the server itself costs,
so the gateway's figures read as a share of what is possible on this machine.
"""

from __future__ import annotations

from typing import Any

BODY = b'{"state":"waiting","position":1}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def quart_app() -> Any:
    """The same constant answer through Quart: what the framework costs on its own."""
    from quart import Quart, Response

    app = Quart(__name__)

    @app.route("/")
    async def plain() -> Response:
        return Response(BODY, content_type="application/json")

    return app
