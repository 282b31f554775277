"""The lean ASGI layer in front of the Quart app.

Quart costs about 0.4 ms of CPU a request on this class of machine, as much as
everything else together. The requests that a crowd makes over and over are
handled here: a waiting student's status check, the public queue state and the
hashed static assets from memory (no Quart, no Redis), and an admitted student's
lookups, forwarded straight to the backend. Anything unusual (no cookie, a bad or
expired one, a backend fault) falls through to Quart, which has the full behaviour
and the pages; a request whose body was already read is replayed to it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from waitroom.assets import IMMUTABLE, Assets
from waitroom.errors import BackendUnavailable
from waitroom.forward import Forwarder
from waitroom.limits import Limits
from waitroom.rawasgi import ASGIApp, ClientGone, Message, Receive, Scope, Send, read_body
from waitroom.standing import standing, status_reply
from waitroom.tickets import PASS_COOKIE, TICKET_COOKIE, TicketRejected, TicketSigner
from waitroom.view import RoomView

log = logging.getLogger(__name__)

_JSON = b"application/json"
_READS = ("GET", "HEAD")
_TICKET = TICKET_COOKIE.encode()
_PASS = PASS_COOKIE.encode()
# Set by this layer when the backend failed, so Quart shows the busy page at once.
BACKEND_FAULT = "waitroom.backend_fault"
# Set by this layer when a pass has used up its lookups, so Quart shows the page.
LOOKUP_LIMITED = "waitroom.lookup_limited"
MAX_BODY = 16 * 1024
FORWARDED_POSTS = frozenset({"/result", "/api/result"})
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
)
_NO_STORE = b"no-store"
_CALM_503 = (
    b'<!doctype html><html lang="en"><meta charset="utf-8">'
    b'<meta name="viewport" content="width=device-width, initial-scale=1">'
    b'<meta http-equiv="refresh" content="5"><title>Please wait</title>'
    b"<p>Please wait: this page retries by itself in a few seconds. "
    b"Your place in line is kept.</p></html>"
)
# Short enough that a CDN's copy lags the frontier by about one refresh.
_STATE_CACHE = b"public, max-age=1, stale-while-revalidate=2"


def cookie(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of the first cookie called ``name``: what ``part.strip().partition(b"=")``
    of each ``;``-separated part of each Cookie header finds, without splitting the
    header (tests/test_status_path.py holds the two together).
    """
    size = len(name)
    for key, value in headers:
        if key == b"cookie":
            at = value.find(name)
            while at >= 0:
                # A part starts here: only whitespace since the last ";".
                if at == 0 or not value[value.rfind(b";", 0, at) + 1 : at].strip():
                    end = value.find(b";", at)
                    rest = value[at + size :] if end < 0 else value[at + size : end]
                    if rest[:1] == b"=":
                        return rest[1:].rstrip().decode("latin-1")
                    if not rest.strip():
                        return ""  # a bare name
                at = value.find(name, at + 1)
    return None


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def wants_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    accept = header(headers, b"accept") or b""
    return b"application/json" in accept and b"text/html" not in accept


class FastPath:
    def __init__(
        self,
        app: ASGIApp,
        view: RoomView,
        signer: TicketSigner,
        assets: Assets,
        forwarder: Forwarder,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.limits = limits
        self.view = view
        self.signer = signer
        self.assets = assets
        self.forwarder = forwarder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/status" and scope["method"] in _READS:
            # The crowd's request: answered without the send wrapper below.
            await self._status(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if await self._handle(scope, receive, tracked):
                return
        except Exception:
            await _failed(scope, send, started)
            return
        await self.app(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request here; False when Quart should (nothing was sent)."""
        method, path = scope["method"], scope["path"]
        if method in _READS:
            if path == "/queue/state":
                await self._state(scope, send)
                return True
            if path.startswith("/static/"):
                await self._static(scope, send, path[len("/static/") :])
                return True
            if path == "/" and method == "GET" and not wants_json(scope["headers"]):
                return await self._forward(scope, receive, send)
        elif method == "POST" and path in FORWARDED_POSTS:
            return await self._forward(scope, receive, send)
        return False

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Forward an admitted student's request; False to let Quart handle it."""
        token = cookie(scope["headers"], _PASS)
        if token is None:
            return False
        try:
            admission = self.signer.read_pass(token)
        except TicketRejected:
            return False  # Quart sends them back to the line and says why
        try:
            body = await read_body(receive, scope["headers"], MAX_BODY)
        except ClientGone:
            return True
        if body is None:
            message = b"request body too large: a lookup needs a roll number and a date\n"
            await _respond(scope, send, 413, message, b"text/plain; charset=utf-8", [])
            return True
        verdict = None
        if scope["method"] == "POST" and self.limits is not None:
            verdict = await self.limits.take_lookup(admission.id)
            if not verdict.allowed:
                scope[LOOKUP_LIMITED] = verdict
                await self.app(scope, _replay(body, receive), send)
                return True
        try:
            answer = await self.forwarder.forward(
                scope["method"], scope["path"], scope["headers"], body
            )
        except BackendUnavailable as exc:
            if verdict is not None and self.limits is not None:
                await self.limits.settle(admission.id, verdict, None)
            scope[BACKEND_FAULT] = str(exc)
            await self.app(scope, _replay(body, receive), send)
            return True
        if verdict is not None and self.limits is not None:
            await self.limits.settle(admission.id, verdict, answer.status)
        headers = [
            *answer.headers,
            (b"content-length", str(len(answer.body)).encode()),
            *SECURITY_HEADERS,
        ]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": answer.body})
        return True

    async def _status(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A status check. Quart answers it when this layer cannot (no state yet, no
        ticket or a bad one); a failure is met as in ``__call__``.
        """
        try:
            answer = self._status_answer(scope)
        except Exception:
            await _failed(scope, send, started=False)
            return
        if answer is None:
            await self.app(scope, receive, send)
            return
        start, body = answer
        try:
            await send(start)
            await send(
                {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
            )
        except Exception:
            await _failed(scope, send, started=True)

    def _status_answer(self, scope: Scope) -> tuple[Message, bytes] | None:
        basis = self.view.status_basis()
        if basis is None:
            return None
        token = cookie(scope["headers"], _TICKET)
        if token is None:
            return None
        try:
            ticket = self.signer.read_ticket(token, basis.state.epoch)
        except TicketRejected:
            return None  # Quart explains and gives a new place
        reply = status_reply(ticket.position, basis)
        if reply is None:  # the pre-queue of a release, the pass-through mode
            now = standing(ticket, self.view)
            body = json.dumps(now.as_json(), separators=(",", ":")).encode()
            reply = now.ready, now.retry_after_s, body
        ready, retry, body = reply
        headers = [
            (b"content-type", _JSON),
            (b"content-length", b"%d" % len(body)),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", _NO_STORE),
            (b"retry-after", b"%d" % retry),
        ]
        start = {"type": "http.response.start", "status": 200 if ready else 202, "headers": headers}
        return start, body

    async def _state(self, scope: Scope, send: Send) -> None:
        view = self.view
        etag = view.state_etag.encode()
        headers = [
            (b"cache-control", _STATE_CACHE),
            (b"etag", etag),
            (b"access-control-allow-origin", b"*"),
        ]
        if view.state is None:
            body = b'{"error":"queue state not available yet","retry_after_s":2}'
            await _respond(
                scope,
                send,
                503,
                body,
                _JSON,
                [(b"cache-control", _NO_STORE), (b"retry-after", b"2")],
            )
        elif header(scope["headers"], b"if-none-match") == etag:
            await _respond(scope, send, 304, b"", _JSON, headers)
        else:
            await _respond(scope, send, 200, view.state_body, _JSON, headers)

    async def _static(self, scope: Scope, send: Send, name: str) -> None:
        asset = self.assets.files.get(name)
        if asset is None:
            await _respond(
                scope,
                send,
                404,
                b"not found\n",
                b"text/plain; charset=utf-8",
                [(b"cache-control", b"no-store")],
            )
            return
        headers = [(b"cache-control", IMMUTABLE), (b"etag", asset.etag)]
        if header(scope["headers"], b"if-none-match") == asset.etag:
            await _respond(scope, send, 304, b"", asset.content_type, headers)
        else:
            await _respond(scope, send, 200, asset.body, asset.content_type, headers)


async def _failed(scope: Scope, send: Send, started: bool) -> None:
    """After an exception in this layer: log it, and answer calmly if nothing was sent."""
    # Quart has its own last line of defence; this is the lean layer's.
    log.exception("waitroom: lean layer failed on %s %s", scope["method"], scope["path"])
    if not started:
        await _respond(
            scope,
            send,
            503,
            _CALM_503,
            b"text/html; charset=utf-8",
            [(b"retry-after", b"5"), (b"cache-control", _NO_STORE)],
        )


async def _respond(
    scope: Scope,
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: list[tuple[bytes, bytes]],
) -> None:
    if status == 304:  # no body, so no content headers
        all_headers = headers
    else:
        all_headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            (b"x-content-type-options", b"nosniff"),
            *headers,
        ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the already-read body once, then the client's events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
