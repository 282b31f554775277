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
from waitroom.door import MAX_TICKETS, STUDENT_REQUESTS, Door, Forward, Visit
from waitroom.errors import BackendUnavailable
from waitroom.forward import Forwarder
from waitroom.i18n import LANGUAGES, pick_language
from waitroom.rawasgi import ASGIApp, ClientGone, Receive, Scope, Send, read_body
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
# The answer to a student who left before their request arrived: nobody to tell.
_GONE = Response(499, b"", None, [], encoded=True, security=())
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
        # Every answer is worked out first and sent in one place, so a failure before
        # it is met with a calm page, and one while sending (the client left) is only
        # logged: no per-request wrapper around ``send`` to track what went out.
        try:
            response = await self._answer(scope, receive)
        except Exception:
            log.exception("waitroom: lean layer failed on %s %s", scope["method"], scope["path"])
            response = Response(
                503, _CALM_503, HTML, [(b"retry-after", b"5"), (b"cache-control", NO_STORE)]
            )
        if response is None:
            await self.app(scope, receive, send)
            return
        if response is _GONE:
            return
        try:
            await send_response(scope, send, response, compress=self._gzip(scope, response))
        except Exception:
            log.exception("waitroom: lean layer failed on %s %s", scope["method"], scope["path"])

    @staticmethod
    def _gzip(scope: Scope, response: Response) -> bool:
        return not response.encoded and accepts_gzip(scope["headers"])

    async def _answer(self, scope: Scope, receive: Receive) -> Response | None:
        """The answer to the request; None when it is Quart's (and nothing was read)."""
        method, path = scope["method"], scope["path"]
        if path == "/status" and method in _READS:
            return self._status(scope) or await self._student(scope, receive)
        if (method, path) in STUDENT_REQUESTS:
            if path == "/" and method in _READS and self._polls_as_json(scope):
                # A JSON app polling / while it waits gets what /status says, by the
                # same fast copy (tests/test_door.py holds the two together); at the
                # front it goes on to the door, which trades its ticket.
                waiting = self._status(scope)
                if waiting is not None and waiting.status == 202:
                    return waiting
            return await self._student(scope, receive)
        if method in _READS:
            if path == "/queue/state":
                return self._state(scope)
            if path.startswith("/static/"):
                return self._static(scope, self.assets.files.get(path[8:]), IMMUTABLE)
            if path == "/favicon.ico":
                icon = self.assets.files.get(self.assets.url("favicon.svg")[8:])
                return self._static(scope, icon, b"public, max-age=86400")
        return None

    # -- the crowd's requests ------------------------------------------------------------

    @staticmethod
    def _polls_as_json(scope: Scope) -> bool:
        """A JSON client with no pass and no language to remember: only its place
        can matter."""
        headers = scope["headers"]
        return (
            not scope.get("query_string") and wants_json(headers) and cookie(headers, _PASS) is None
        )

    def _status(self, scope: Scope) -> Response | None:
        """A waiting student's status check from the view alone; None when the door
        must decide (no valid ticket, no state yet)."""
        reply = self.door.status(cookie_values(scope["headers"], _TICKET, MAX_TICKETS))
        if reply is None:
            return None
        ready, retry, body = reply
        headers = [
            (b"content-type", JSON),
            (b"content-length", b"%d" % len(body)),
            (b"x-content-type-options", b"nosniff"),
            (b"cache-control", NO_STORE),
            (b"retry-after", b"%d" % retry),
        ]
        # Headers complete as they are: the crowd's request skips the general path.
        return Response(200 if ready else 202, body, None, headers, encoded=True, security=())

    async def _student(self, scope: Scope, receive: Receive) -> Response | None:
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
            cookie_values(headers, _TICKET, MAX_TICKETS),
            cookie(headers, _PASS),
            as_json,
            scope.get("client"),
            headers,
        )
        decision = await self.door.decide(visit)
        if isinstance(decision, Forward):
            response = await self._forward(scope, receive, decision, as_json, lang)
            if response is None:
                return _GONE  # the student left before sending their lookup
            # A pass traded for this request is theirs whatever the origin did.
            response = self.replies.with_pass(response, decision.issued, visit)
        else:
            response = self.replies.to(decision, visit, lang)
        if chosen is not None:
            response.headers.append(
                self.cookies.set(LANG_COOKIE, chosen, 365 * 86400, http_only=False)
            )
        return response

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

    def _state(self, scope: Scope) -> Response:
        view = self.view
        if view.state is None:
            body = b'{"error":"queue state not available yet","retry_after_s":2}'
            return Response(503, body, JSON, [(b"cache-control", NO_STORE), (b"retry-after", b"2")])
        etag = view.state_etag.encode()
        headers = [
            (b"cache-control", _STATE_CACHE),
            (b"etag", etag),
            (b"access-control-allow-origin", b"*"),
        ]
        if header(scope["headers"], b"if-none-match") == etag:
            return Response(304, b"", None, headers)
        return Response(200, view.state_body, JSON, headers)

    def _static(self, scope: Scope, asset: Asset | None, cache: bytes) -> Response:
        if asset is None:
            return Response(404, b"not found\n", TEXT, [(b"cache-control", NO_STORE)])
        headers = [(b"cache-control", cache), (b"etag", asset.etag)]
        if header(scope["headers"], b"if-none-match") == asset.etag:
            return Response(304, b"", None, headers)
        # Compressed once at start (waitroom.assets), never per request.
        if asset.gzipped is None:
            return Response(200, asset.body, asset.content_type, headers, encoded=True)
        headers.append((b"vary", b"accept-encoding"))
        if accepts_gzip(scope["headers"]):
            headers.append((b"content-encoding", b"gzip"))
            return Response(200, asset.gzipped, asset.content_type, headers, encoded=True)
        return Response(200, asset.body, asset.content_type, headers, encoded=True)


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
