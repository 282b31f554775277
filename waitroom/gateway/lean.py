"""The lean ASGI layer: every request a student makes, without a framework.

Quart costs about 0.4 ms of CPU a request on this class of machine, more than a
raw ASGI server itself; a waiting room that spent it on the crowd's requests
failed at its own door. So everything a student meets is answered here: the
status check, the public queue state, the hashed assets, and every request for
the origin. A protected path (``waitroom.shared.paths``) goes through the door
(``waitroom.room.door``): a first visit, a refresh, a JSON app's poll, the
ticket-for-pass exchange, an admitted student's lookups; ``waitroom.gateway.replies`` and
the origin's answer are what is sent. Any other path of the origin passes straight
through. Quart, behind this layer, keeps the admin pages, ``/metrics``,
``/readyz`` and ``/healthz``.

Bodies go to the origin as they arrive, up to ``max_body_bytes``; answers come back
whole when small, streamed when large or chunked.

A WebSocket is refused cleanly (nothing here speaks it), and anything that goes
wrong becomes a calm 503 page that retries by itself, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from urllib.parse import parse_qsl, quote

from waitroom.errors import BackendUnavailable
from waitroom.gateway.forward import Forwarder
from waitroom.gateway.i18n import pick_language
from waitroom.gateway.replies import Replies
from waitroom.gateway.responses import (
    HTML,
    JSON,
    LANG_COOKIE,
    NO_STORE,
    TEXT,
    CookiePolicy,
    Response,
    StreamCut,
    accepts_gzip,
    send_response,
)
from waitroom.gateway.upstream import AnswerStream, StreamedBody, UpstreamError, UpstreamResponse
from waitroom.room.door import MAX_TICKETS, STATUS_PATH, Door, Forward, Visit
from waitroom.room.snapshot import RoomView
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.assets import IMMUTABLE, Asset, Assets
from waitroom.shared.languages import LANGUAGES
from waitroom.shared.paths import cached_rule
from waitroom.shared.rawasgi import ASGIApp, ClientGone, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

# A chosen language is remembered for a year.
LANG_COOKIE_TTL_S = 365 * 86400
# The largest body of a request Quart answers (an admin form).
MAX_BODY = 16 * 1024
# A body up to this is read whole before it is forwarded: a form, which the busy
# page can resubmit and which may be sent twice. A larger one is streamed.
WHOLE_BODY = 64 * 1024
# After its first body_timeout_s, a streamed body must keep arriving at this pace
# (bytes a second): 256 kbit/s, a slow phone's upload, not a trickle.
MIN_UPLOAD_PACE = 32 * 1024
# Quart's paths: everything else is the lean layer's or the origin's.
QUART_PATHS = ("/admin", "/metrics", "/readyz", "/healthz")
_QUART_PREFIXES = tuple(p + "/" for p in QUART_PATHS)
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
# say how much of their turn is left (waitroom/lookup/app.py reads these).
LANG_HEADER = b"x-waitroom-lang"
LOOKUPS_LEFT_HEADER = b"x-waitroom-lookups-left"
PASS_EXPIRES_HEADER = b"x-waitroom-pass-expires"


def cookie_values(headers: Iterable[tuple[bytes, bytes]], name: bytes, limit: int) -> list[str]:
    """Up to ``limit`` values of the cookies called ``name``, in order: what
    ``part.strip().partition(b"=")`` of each ``;``-separated part of each Cookie
    header finds, without splitting the header (tests/gateway/test_status_path.py holds the
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
        protected_paths: str,
        max_body_bytes: int,
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
        self.protected_paths = protected_paths  # until the room's state says otherwise
        self.max_body_bytes = max_body_bytes

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
        except StreamCut as exc:
            # Returning without the body's end makes the server drop the connection.
            log.warning("waitroom: origin's answer to %s cut short: %s", scope["path"], exc)
        except Exception:
            log.exception("waitroom: lean layer failed on %s %s", scope["method"], scope["path"])
        finally:
            if response.stream is not None:
                response.stream.close()

    @staticmethod
    def _gzip(scope: Scope, response: Response) -> bool:
        return not response.encoded and accepts_gzip(scope["headers"])

    async def _answer(self, scope: Scope, receive: Receive) -> Response | None:
        """The answer to the request; None when it is Quart's (and nothing was read)."""
        method, path = scope["method"], scope["path"]
        if path == STATUS_PATH:
            if method not in _READS:
                return None
            return self._status(scope) or await self._student(scope, receive)
        if method in _READS:
            if path == "/queue/state":
                return self._state(scope)
            if path.startswith("/static/"):
                asset = self.assets.files.get(path[8:])
                if asset is not None:  # else the origin's own /static/
                    return self._static(scope, asset, IMMUTABLE)
            if path == "/favicon.ico":
                icon = self.assets.files.get(self.assets.url("favicon.svg")[8:])
                return self._static(scope, icon, b"public, max-age=86400")
        if path in QUART_PATHS or path.startswith(_QUART_PREFIXES):
            return None
        state = self.view.state
        rule = cached_rule(state.protected_paths if state is not None else self.protected_paths)
        if not rule.matches(path):
            return await self._straight(scope, receive)
        if method in _READS and self._polls_as_json(scope):
            # A JSON app polling while it waits gets what /status says, by the same
            # fast copy (tests/room/test_door.py holds the two together); at the front it
            # goes on to the door, which trades its ticket.
            waiting = self._status(scope)
            if waiting is not None and waiting.status == 202:
                return waiting
        return await self._student(scope, receive)

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
        lang = _language(headers, chosen)
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
            response.headers.append(self.cookies.set(LANG_COOKIE, chosen, LANG_COOKIE_TTL_S))
        return response

    async def _straight(self, scope: Scope, receive: Receive) -> Response | None:
        """A path the room does not protect: to the origin, no line, no pass."""
        headers = scope["headers"]
        lang = _language(headers, query_lang(scope))
        as_json = wants_json(headers)
        response = await self._forward(scope, receive, Forward(None), as_json, lang)
        return _GONE if response is None else response

    async def _forward(
        self, scope: Scope, receive: Receive, decision: Forward, as_json: bool, lang: str
    ) -> Response | None:
        """The origin's answer to the request, or the busy page; None when the
        student left before their request arrived."""
        method, path = scope["method"], scope["path"]
        headers = scope["headers"]
        declared = _content_length(headers)
        body: bytes | StreamedBody = b""
        # Whatever stops the request short of the origin gives its lookup back.
        try:
            if declared is not None and declared > self.max_body_bytes:
                raise _BodyProblem(self._too_large())
            body = await self._body(receive, declared)
            # The path as the client sent it (percent-encoded), not as decoded for us.
            raw: bytes = scope.get("raw_path") or quote(path).encode("ascii")
            query: bytes = scope.get("query_string", b"")
            target = (raw + b"?" + query if query else raw).decode("latin-1")
            answer = await self.forwarder.forward(
                method,
                target,
                headers,
                body,
                self._about(scope, decision, lang),
                repeatable=decision.verdict is not None,
                lookup=method != "HEAD" and self.door.lookups.matches(path),
            )
            first = await _first_piece(answer)
        except ClientGone:
            await self.door.settle(decision, None)
            return None
        except _BodyProblem as exc:
            await self.door.settle(decision, None)
            return exc.response
        except BackendUnavailable as exc:
            await self.door.settle(decision, None)
            log.warning("waitroom: %s", exc)
            resubmit = _form(body) if method == "POST" and isinstance(body, bytes) else {}
            return self.replies.busy(as_json, lang, resubmit, path)
        await self.door.settle(decision, answer.status)
        return _passed_on(method, answer, first)

    async def _body(self, receive: Receive, declared: int | None) -> bytes | StreamedBody:
        """The request's body: whole when it is small and quick, else streamed as it
        arrives. Raises ``ClientGone`` or ``_BodyProblem`` (too large, too slow)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= WHOLE_BODY:
            message = await self._receive(receive, deadline)
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        if size > self.max_body_bytes:
            raise _BodyProblem(self._too_large())
        if not more:
            return b"".join(chunks)

        async def pieces() -> AsyncIterator[bytes]:
            received = size
            yield b"".join(chunks)
            while True:
                message = await self._receive(receive, deadline + received / MIN_UPLOAD_PACE)
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > self.max_body_bytes:
                    raise _BodyProblem(self._too_large())
                yield chunk
                if not message.get("more_body", False):
                    return

        return StreamedBody(declared, pieces())

    async def _receive(self, receive: Receive, deadline: float) -> Message:
        try:
            async with asyncio.timeout_at(deadline):
                message = await receive()
        except TimeoutError:
            slow = (
                f"The request body did not arrive within {self.body_timeout_s:g} s. "
                "Send the form again.\n"
            )
            raise _BodyProblem(
                Response(408, slow.encode(), TEXT, [(b"connection", b"close")])
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientGone
        return message

    def _too_large(self) -> Response:
        message = (
            f"The request body is larger than this site accepts "
            f"({self.max_body_bytes} bytes). Send a smaller file or form.\n"
        )
        return Response(413, message.encode(), TEXT, [(b"cache-control", NO_STORE)])

    def _about(self, scope: Scope, decision: Forward, lang: str) -> list[tuple[bytes, bytes]]:
        """What the origin is told: who asked (X-Forwarded-*), and what it may show
        of the student's turn (language, lookups, time)."""
        about = self._forwarded(scope)
        about.append((LANG_HEADER, lang.encode()))
        admission = decision.admission
        if admission is not None:
            expires = admission.issued_at + self.pass_ttl_s()
            about.append((PASS_EXPIRES_HEADER, b"%d" % expires))
            verdict = decision.verdict
            if verdict is not None and verdict.counted:
                about.append((LOOKUPS_LEFT_HEADER, b"%d" % max(0, verdict.limit - verdict.used)))
        return about

    def _forwarded(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """X-Forwarded-For/-Proto/-Host: the chain a trusted proxy sent, with the peer
        appended; from anyone else only the peer, since they could write anything."""
        headers = scope["headers"]
        peer = scope.get("client")
        chain = [v for k, v in headers if k == b"x-forwarded-for"]
        address = str(peer[0]).encode("latin-1") if peer else b"unix"
        if chain and self.door.limits.trusted_peer(peer):
            address = b", ".join([*chain, address])
        forwarded = [
            (b"x-forwarded-for", address),
            (b"x-forwarded-proto", str(scope.get("scheme", "http")).encode("latin-1")),
        ]
        host = header(headers, b"host")
        if host is not None:
            forwarded.append((b"x-forwarded-host", host))
        return forwarded

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
        # Compressed once at start (waitroom.shared.assets), never per request.
        if asset.gzipped is None:
            return Response(200, asset.body, asset.content_type, headers, encoded=True)
        headers.append((b"vary", b"accept-encoding"))
        if accepts_gzip(scope["headers"]):
            headers.append((b"content-encoding", b"gzip"))
            return Response(200, asset.gzipped, asset.content_type, headers, encoded=True)
        return Response(200, asset.body, asset.content_type, headers, encoded=True)


def _language(headers: Iterable[tuple[bytes, bytes]], chosen: str | None) -> str:
    """The student's language: ``?lang=`` (``chosen``), their cookie, Accept-Language."""
    accept = header(headers, b"accept-language") or b""
    return pick_language(chosen, cookie(headers, _LANG), accept.decode("latin-1"))


class _BodyProblem(Exception):
    """The request's body cannot be forwarded; ``response`` tells the client why."""

    def __init__(self, response: Response) -> None:
        self.response = response
        super().__init__(response.status)


def _content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    value = header(headers, b"content-length")
    # The server refuses a malformed length before the request reaches us.
    return int(value) if value is not None and value.isdigit() else None


class _Peeked:
    """An origin's streamed answer whose first piece has already arrived."""

    def __init__(self, stream: AnswerStream, first: bytes, rest: AsyncIterator[bytes]) -> None:
        self.stream = stream
        self.first = first
        self.rest = rest

    @property
    def length(self) -> int | None:
        return self.stream.length

    async def pieces(self) -> AsyncIterator[bytes]:
        if self.first:
            yield self.first
        async for piece in self.rest:
            yield piece

    def close(self) -> None:
        self.stream.close()


async def _first_piece(answer: UpstreamResponse) -> _Peeked | None:
    """A streamed answer with its first piece read: an origin that fails before
    sending any of its body still gets the busy page, not a broken answer."""
    stream = answer.stream
    if stream is None:
        return None
    rest = stream.pieces()
    try:
        first = await anext(rest, b"")
    except UpstreamError as exc:
        stream.close()
        raise BackendUnavailable("origin", str(exc)) from exc
    except BaseException:
        stream.close()
        raise
    return _Peeked(stream, first, rest)


def _passed_on(method: str, answer: UpstreamResponse, stream: _Peeked | None) -> Response:
    """The origin's answer as the client gets it: its own headers (the gateway adds
    none of its security headers to a site it does not know), its own encoding."""
    content_type = None
    declared = None
    encoded = False
    headers: list[tuple[bytes, bytes]] = []
    for name, value in answer.headers:
        if name == b"content-type":
            content_type = value
        elif name == b"content-length":
            declared = value
        else:
            encoded = encoded or name == b"content-encoding"
            headers.append((name, value))
    length = None
    if method == "HEAD" and declared is not None and declared.isdigit():
        length = int(declared)  # what a GET would get; a HEAD's answer has no body
    elif content_type is None and stream is None and answer.status not in (204, 304):
        length = len(answer.body)  # a redirect, say: nothing to type or compress
    return Response(
        answer.status,
        answer.body,
        content_type,
        headers,
        encoded=encoded,
        security=(),
        stream=stream,
        length=length,
    )


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
