"""The lean ASGI layer: every request a student makes, without a framework.

Quart costs about 0.4 ms of CPU a request on this class of machine, more than a
raw ASGI server itself; a waiting room that spent it on the crowd's requests
failed at its own door. So everything a student meets is answered here: the
status check, the public queue state, the hashed assets, every page load of ``/``
(a first visit, a refresh, a JSON app's poll), the ticket-for-pass exchange and
the forwarding of an admitted student's lookups. The door (``waitroom.door``)
decides, ``waitroom.replies`` and the origin's answer are what is sent. Quart,
behind this layer, keeps the admin pages, ``/metrics``, ``/readyz`` and
``/healthz``, and answers paths that are nobody's.

A WebSocket is refused cleanly (nothing here speaks it), and anything that goes
wrong becomes a calm 503 page that retries by itself, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from urllib.parse import parse_qsl

from waitroom.assets import IMMUTABLE, Asset, Assets
from waitroom.door import STUDENT_REQUESTS, Door, Forward, Visit
from waitroom.errors import BackendUnavailable
from waitroom.forward import Forwarder
from waitroom.i18n import LANGUAGES, pick_language
from waitroom.rawasgi import ASGIApp, ClientGone, Message, Receive, Scope, Send, read_body
from waitroom.replies import Replies
from waitroom.responses import (
    HTML,
    JSON,
    NO_STORE,
    SECURITY_HEADERS,
    TEXT,
    CookiePolicy,
    Response,
    accepts_gzip,
    send_response,
)
from waitroom.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.view import RoomView

log = logging.getLogger(__name__)

LANG_COOKIE = "wr_lang"
MAX_BODY = 16 * 1024
_TICKET = TICKET_COOKIE.encode()
_PASS = PASS_COOKIE.encode()
_LANG = LANG_COOKIE.encode()
_READS = ("GET", "HEAD")
_CALM_503 = (
    b'<!doctype html><html lang="en"><meta charset="utf-8">'
    b'<meta name="viewport" content="width=device-width, initial-scale=1">'
    b'<meta http-equiv="refresh" content="5"><title>Please wait</title>'
    b"<p>Please wait: this page retries by itself in a few seconds. "
    b"Your place in line is kept.</p></html>"
)
# Short enough that a CDN's copy lags the frontier by about one refresh.
_STATE_CACHE = b"public, max-age=1, stale-while-revalidate=2"
# What the origin is told of the student, so its pages can speak their language and
# say how much of their turn is left (lookup/app.py reads these).
LANG_HEADER = b"x-waitroom-lang"
LOOKUPS_LEFT_HEADER = b"x-waitroom-lookups-left"
PASS_EXPIRES_HEADER = b"x-waitroom-pass-expires"


def cookie_values(headers: Iterable[tuple[bytes, bytes]], name: bytes, limit: int) -> list[str]:
    """Up to ``limit`` values of the cookies called ``name``, in order: what
    ``part.strip().partition(b"=")`` of each ``;``-separated part of each Cookie
    header finds, without splitting the header (tests/test_status_path.py holds the
    two together). The limit bounds what a padded header can cost.
    """
    found: list[str] = []
    size = len(name)
    for key, value in headers:
        if key != b"cookie":
            continue
        at = value.find(name)
        while at >= 0:
            # A part starts here: only whitespace since the last ";".
            if at == 0 or not value[value.rfind(b";", 0, at) + 1 : at].strip():
                end = value.find(b";", at)
                rest = value[at + size :] if end < 0 else value[at + size : end]
                if rest[:1] == b"=":
                    found.append(rest[1:].rstrip().decode("latin-1"))
                elif not rest.strip():
                    found.append("")  # a bare name
                if len(found) >= limit:
                    return found
            at = value.find(name, at + 1)
    return found


def cookie(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of the first cookie called ``name``."""
    values = cookie_values(headers, name, 1)
    return values[0] if values else None


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def wants_json(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    accept = header(headers, b"accept") or b""
    return b"application/json" in accept and b"text/html" not in accept


def query_lang(scope: Scope) -> str | None:
    """``?lang=`` when it names a language we speak."""
    query: bytes = scope.get("query_string", b"")
    if b"lang=" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1")):
        if name == "lang" and value in LANGUAGES:
            return value
    return None


class Lean:
    def __init__(
        self,
        app: ASGIApp,
        door: Door,
        replies: Replies,
        view: RoomView,
        assets: Assets,
        forwarder: Forwarder,
        *,
        cookies: CookiePolicy,
        body_timeout_s: float,
        pass_ttl_s: Callable[[], int],
    ) -> None:
        self.app = app
        self.door = door
        self.replies = replies
        self.view = view
        self.assets = assets
        self.forwarder = forwarder
        self.cookies = cookies
        self.body_timeout_s = body_timeout_s
        self.pass_ttl_s = pass_ttl_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await _refuse_websocket(receive, send)
        else:  # the lifespan: Quart opens and closes the worker's resources
            await self.app(scope, receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            if not await self._route(scope, receive, tracked):
                await self.app(scope, receive, send)
        except Exception:
            await _failed(scope, send, started)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request here; False when Quart should (nothing was sent)."""
        method, path = scope["method"], scope["path"]
        if path == "/status" and method in _READS:
            if not await self._status(scope, send):
                await self._student(scope, receive, send)
            return True
        if (method, path) in STUDENT_REQUESTS:
            await self._student(scope, receive, send)
            return True
        if method in _READS:
            if path == "/queue/state":
                await self._state(scope, send)
                return True
            if path.startswith("/static/"):
                await self._static(scope, send, self.assets.files.get(path[8:]), IMMUTABLE)
                return True
            if path == "/favicon.ico":
                icon = self.assets.files.get(self.assets.url("favicon.svg")[8:])
                await self._static(scope, send, icon, b"public, max-age=86400")
                return True
        return False

    # -- the crowd's requests ------------------------------------------------------------

    async def _status(self, scope: Scope, send: Send) -> bool:
        """A waiting student's status check from the view alone; False when the door
        must decide (no valid ticket, no state yet)."""
        reply = self.door.status(cookie_values(scope["headers"], _TICKET, 4))
        if reply is None:
            return False
        ready, retry, body = reply
        headers = [
            (b"content-type", JSON),
            (b"content-length", b"%d" % len(body)),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", NO_STORE),
            (b"retry-after", b"%d" % retry),
        ]
        status = 200 if ready else 202
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
        return True

    async def _student(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope["headers"]
        path = scope["path"]
        as_json = path.startswith(("/api/", "/status")) or wants_json(headers)
        chosen = query_lang(scope)
        lang = pick_language(
            chosen,
            cookie(headers, _LANG),
            (header(headers, b"accept-language") or b"").decode("latin-1"),
        )
        visit = Visit(
            scope["method"],
            path,
            cookie_values(headers, _TICKET, 4),
            cookie(headers, _PASS),
            as_json,
            scope.get("client"),
            headers,
        )
        decision = await self.door.decide(visit)
        if isinstance(decision, Forward):
            response = await self._forward(scope, receive, decision, as_json, lang)
            if response is None:
                return  # the student left before sending their lookup
            # A pass traded for this request is theirs whatever the origin did.
            response = self.replies.with_pass(response, decision.issued, visit)
        else:
            response = self.replies.to(decision, visit, lang)
        if chosen is not None:
            response.headers.append(
                self.cookies.set(LANG_COOKIE, chosen, 365 * 86400, http_only=False)
            )
        await send_response(scope, send, response, compress=accepts_gzip(headers))

    async def _forward(
        self, scope: Scope, receive: Receive, decision: Forward, as_json: bool, lang: str
    ) -> Response | None:
        """The origin's answer to an admitted student's request, or the busy page."""
        method, path = scope["method"], scope["path"]
        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await read_body(receive, scope["headers"], MAX_BODY)
        except ClientGone:
            await self.door.settle(decision, None)
            return None
        except TimeoutError:
            await self.door.settle(decision, None)
            slow = (
                f"The request body did not arrive within {self.body_timeout_s:g} s. "
                "Send the form again.\n"
            )
            return Response(408, slow.encode(), TEXT, [(b"connection", b"close")])
        if body is None:
            await self.door.settle(decision, None)
            message = b"request body too large: a lookup needs a roll number and a date\n"
            return Response(413, message, TEXT, [(b"cache-control", NO_STORE)])
        query: bytes = scope.get("query_string", b"")
        target = f"{path}?{query.decode('latin-1')}" if query else path
        try:
            answer = await self.forwarder.forward(
                method, target, scope["headers"], body, self._about(decision, lang)
            )
        except BackendUnavailable as exc:
            await self.door.settle(decision, None)
            log.warning("waitroom: %s", exc)
            resubmit = _form(body) if method == "POST" else {}
            return self.replies.busy(as_json, lang, resubmit, path)
        await self.door.settle(decision, answer.status)
        content_type = None
        headers: list[tuple[bytes, bytes]] = []
        for name, value in answer.headers:
            if name == b"content-type":
                content_type = value
            else:
                headers.append((name, value))
        return Response(
            answer.status, answer.body, content_type, headers, security=SECURITY_HEADERS
        )

    def _about(self, decision: Forward, lang: str) -> list[tuple[bytes, bytes]]:
        """What the origin may show of the student's turn: language, lookups, time."""
        about = [(LANG_HEADER, lang.encode())]
        admission = decision.admission
        if admission is not None:
            expires = admission.issued_at + self.pass_ttl_s()
            about.append((PASS_EXPIRES_HEADER, b"%d" % expires))
            verdict = decision.verdict
            if verdict is not None and verdict.counted:
                about.append((LOOKUPS_LEFT_HEADER, b"%d" % max(0, verdict.limit - verdict.used)))
        return about

    # -- what a CDN could serve ----------------------------------------------------------

    async def _state(self, scope: Scope, send: Send) -> None:
        view = self.view
        if view.state is None:
            body = b'{"error":"queue state not available yet","retry_after_s":2}'
            response = Response(
                503, body, JSON, [(b"cache-control", NO_STORE), (b"retry-after", b"2")]
            )
            await send_response(scope, send, response, compress=False)
            return
        etag = view.state_etag.encode()
        headers = [
            (b"cache-control", _STATE_CACHE),
            (b"etag", etag),
            (b"access-control-allow-origin", b"*"),
        ]
        if header(scope["headers"], b"if-none-match") == etag:
            response = Response(304, b"", None, headers)
        else:
            response = Response(200, view.state_body, JSON, headers)
        await send_response(scope, send, response, compress=accepts_gzip(scope["headers"]))

    async def _static(self, scope: Scope, send: Send, asset: Asset | None, cache: bytes) -> None:
        if asset is None:
            response = Response(404, b"not found\n", TEXT, [(b"cache-control", NO_STORE)])
            await send_response(scope, send, response, compress=False)
            return
        headers = [(b"cache-control", cache), (b"etag", asset.etag)]
        if header(scope["headers"], b"if-none-match") == asset.etag:
            await send_response(scope, send, Response(304, b"", None, headers), compress=False)
            return
        # Compressed once at start (waitroom.assets), never per request.
        if asset.gzipped is None:
            response = Response(200, asset.body, asset.content_type, headers, encoded=True)
        else:
            headers.append((b"vary", b"accept-encoding"))
            if accepts_gzip(scope["headers"]):
                headers.append((b"content-encoding", b"gzip"))
                response = Response(200, asset.gzipped, asset.content_type, headers, encoded=True)
            else:
                response = Response(200, asset.body, asset.content_type, headers, encoded=True)
        await send_response(scope, send, response, compress=False)


def _form(body: bytes) -> dict[str, str]:
    """A lookup form's fields, to resubmit from the busy page."""
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except (UnicodeDecodeError, ValueError):
        return {}


async def _refuse_websocket(receive: Receive, send: Send) -> None:
    """Nothing here speaks WebSocket: close before accepting, which the server turns
    into an HTTP 403 for the client."""
    message = await receive()
    if message["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008, "reason": "not a WebSocket endpoint"})


async def _failed(scope: Scope, send: Send, started: bool) -> None:
    """After an exception in this layer: log it, and answer calmly if nothing was sent."""
    log.exception("waitroom: lean layer failed on %s %s", scope["method"], scope["path"])
    if not started:
        response = Response(
            503, _CALM_503, HTML, [(b"retry-after", b"5"), (b"cache-control", NO_STORE)]
        )
        await send_response(scope, send, response, compress=False)
