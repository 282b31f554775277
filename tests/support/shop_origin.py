"""A school portal that is not the lookup backend: an origin of a different shape.

Run as its own process (``python -m tests.support.shop_origin PORT``) by
tests/gateway/test_any_origin.py, so the gateway forwards to a real server over a real
socket. It has what a board's existing site has and the lookup backend has not:
a login that sets its own cookie and redirects (to its own absolute address, as
many frameworks write it), pages behind that cookie, a file upload, a streamed
download, a large page, a slow page, a page that breaks off mid-answer, a
``403`` of its own, and an echo of what it was sent. It checks no admission
header: the "skip it" choice an origin may make.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import AsyncIterator

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, Response, redirect, request

BIG_BYTES = 1_000_000


def create_portal(port: int) -> Quart:
    app = Quart(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
    me = f"http://127.0.0.1:{port}"

    @app.get("/login")
    async def login_form() -> str:
        return '<form method="post" action="/login"><input name="name"></form>'

    @app.post("/login")
    async def login() -> Response:
        name = (await request.form).get("name", "")
        answer = redirect("/account", code=303)
        answer.set_cookie("portal_session", name, httponly=True)
        answer.set_cookie("portal_theme", "dark")
        return answer

    @app.get("/account")
    async def account() -> Response | str:
        name = request.cookies.get("portal_session")
        if not name:
            return redirect(f"{me}/login?next=/account", code=302)
        return f"<h1>Account of {name}</h1>"

    @app.post("/upload")
    async def upload() -> dict[str, object]:
        files = await request.files
        sent = files["marksheet"]
        data = sent.read()
        form = await request.form
        return {
            "name": sent.filename,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "note": form.get("note"),
        }

    @app.route("/echo", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def echo() -> Response:
        body = await request.get_data()
        seen = {
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode(),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body_size": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        return Response(
            json.dumps(seen), content_type="application/json", headers={"X-Portal": "echo"}
        )

    @app.get("/stream")
    async def stream() -> Response:
        parts = int(request.args.get("parts", "5"))

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(parts):
                yield f"part {i}\n".encode()
                await asyncio.sleep(0.05)

        return Response(pieces(), content_type="text/plain")

    @app.get("/big")
    async def big() -> Response:
        body = bytes(range(256)) * (BIG_BYTES // 256) + b"x" * (BIG_BYTES % 256)
        return Response(body, content_type="application/octet-stream")

    @app.get("/slow")
    async def slow() -> str:
        await asyncio.sleep(float(request.args.get("s", "1")))
        return "finally"

    @app.get("/cut")
    async def cut() -> Response:
        async def pieces() -> AsyncIterator[bytes]:
            yield b"the first part of the answer\n"
            await asyncio.sleep(0.05)
            raise ConnectionAbortedError("the portal's database went away mid-answer")

        return Response(pieces(), content_type="text/plain")

    @app.get("/private")
    async def private() -> tuple[str, int]:
        return "members only", 403

    @app.get("/public/info")
    async def info() -> dict[str, object]:
        return {"open": True, "cookie": request.headers.get("Cookie", "")}

    return app


async def main(port: int) -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    await serve(create_portal(port), config)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
