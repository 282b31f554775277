"""What every answer of the gateway shares: headers, the cookie policy, gzip.

One place sets every cookie's attributes (``CookiePolicy``: the students' cookies
the lean layer sets, the admin's that Quart's pages set), one place the
security headers, one place (``waitroom.shared.compression``, which the hashed
assets use too) decides what is worth compressing; the pieces that
build answers (``waitroom.gateway.replies``, ``waitroom.gateway.lean``) only say what to send.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from werkzeug.sansio.response import Response as QuartResponse

from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.compression import compressible, gzip
from waitroom.shared.rawasgi import Scope, Send

_NOSNIFF = (b"x-content-type-options", b"nosniff")
_CSP = (
    b"content-security-policy",
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"frame-ancestors 'none'; form-action 'self'",
)
# Every header costs Hypercorn about 8 µs to write (measured: six more headers on a
# constant answer took a fifth off its throughput), so each answer carries only what
# protects it. Our own pages: the CSP (its frame-ancestors is what X-Frame-Options
# said, for every current browser) and nosniff; the referrer policy is a <meta> in
# the page. JSON and text: nosniff. Quart's pages get the full set. What we pass on
# from an origin gets none of ours: it is the origin's page (waitroom.gateway.lean).
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    _NOSNIFF,
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    _CSP,
)
PAGE_SECURITY = (_NOSNIFF, _CSP)
DATA_SECURITY = (_NOSNIFF,)
HTML = b"text/html; charset=utf-8"
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"
NO_STORE = b"no-store"


class Streamed(Protocol):
    """A body sent as it comes (an origin's large or chunked answer)."""

    @property
    def length(self) -> int | None: ...  # None: unknown, sent chunked

    def pieces(self) -> AsyncIterator[bytes]: ...

    def close(self) -> None: ...


class StreamCut(Exception):
    """A streamed body stopped short after its head went out: the connection is
    ended without the body's end, so the client sees a broken answer, not a short
    one."""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: bytes | None = HTML
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    # The body is already as it should go out (compressed ahead, or never to be).
    encoded: bool = False
    # None: chosen by the content type (PAGE_SECURITY or DATA_SECURITY).
    security: tuple[tuple[bytes, bytes], ...] | None = None
    # The body still to come, instead of ``body`` (closed by whoever sends it).
    stream: Streamed | None = None
    # The Content-Length to declare when it is not the body's (an origin's answer
    # to HEAD, which declares what a GET would get).
    length: int | None = None


# The student's language (the lean layer sets it when ``?lang=`` chooses one).
LANG_COOKIE = "wr_lang"
# The admin's session, and the login form's own CSRF token (``waitroom.gateway.admin.auth``).
SESSION_COOKIE = "wr_admin"
LOGIN_COOKIE = "wr_admin_login"


@dataclass(frozen=True, slots=True)
class CookieRule:
    """Where a cookie goes and who may read it (``Secure`` is the policy's, for all)."""

    path: str
    same_site: str
    http_only: bool = True


# A student's cookies go to the whole site, Lax: a link from the board's own page
# brings them. The admin's go only to /admin, Strict: no other site's link or form
# carries them. Scripts read none of them but the language.
STUDENT = CookieRule("/", "Lax")
ADMIN = CookieRule("/admin", "Strict")
COOKIES: dict[str, CookieRule] = {
    TICKET_COOKIE: STUDENT,
    PASS_COOKIE: STUDENT,
    LANG_COOKIE: CookieRule("/", "Lax", http_only=False),
    SESSION_COOKIE: ADMIN,
    LOGIN_COOKIE: ADMIN,
}


class CookiePolicy:
    """Every cookie the gateway sets, and its attributes, in one place: Quart's session
    interface in spirit. A cookie not in ``COOKIES`` cannot be set at all.

    ``set`` and ``drop`` give the lean layer its header; ``set_on`` and ``drop_on``
    add the same header to a Quart response (the admin's pages).
    """

    def __init__(self, secure: bool) -> None:
        self.secure = secure
        # name -> (b"name=", the attributes after Max-Age when set, when dropped)
        self._cookies: dict[str, tuple[bytes, bytes, bytes]] = {}
        for name, rule in COOKIES.items():
            tail = b"; Path=%s; SameSite=%s" % (rule.path.encode(), rule.same_site.encode())
            if secure:
                tail += b"; Secure"
            kept = tail + b"; HttpOnly" if rule.http_only else tail
            self._cookies[name] = (name.encode() + b"=", kept, tail)

    def set(self, name: str, value: str, max_age: int) -> tuple[bytes, bytes]:
        start, tail, _ = self._cookies[name]
        # Signed tokens and language codes need no quoting: URL-safe base64, a-z.
        return b"set-cookie", b"%s%s; Max-Age=%d%s" % (start, value.encode(), max_age, tail)

    def drop(self, name: str) -> tuple[bytes, bytes]:
        start, _, tail = self._cookies[name]
        cookie = b'%s""; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0%s' % (start, tail)
        return b"set-cookie", cookie

    def set_on(self, response: QuartResponse, name: str, value: str, max_age: int) -> None:
        response.headers.add("Set-Cookie", self.set(name, value, max_age)[1].decode("latin-1"))

    def drop_on(self, response: QuartResponse, name: str) -> None:
        response.headers.add("Set-Cookie", self.drop(name)[1].decode("latin-1"))


def accepts_gzip(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"accept-encoding":
            return b"gzip" in value
    return False


async def send_response(scope: Scope, send: Send, response: Response, *, compress: bool) -> None:
    """Send ``response``; gzip its body when ``compress`` (the client accepts it) and
    it is worth it. A ``HEAD`` gets the headers a ``GET`` would, and no body.
    ``StreamCut`` when a streamed body stops short."""
    if response.stream is not None:
        await _send_stream(scope, send, response, response.stream)
        return
    body = response.body
    headers = response.headers
    content_type = response.content_type
    if response.length is not None:
        if content_type is not None:
            headers.append((b"content-type", content_type))
        headers.append((b"content-length", b"%d" % response.length))
    elif response.status not in (204, 304) and content_type is not None:
        if not response.encoded and compressible(content_type, len(body)):
            # A no-store answer is never cached, so no cache needs to be told what
            # the encoding depended on.
            if (b"cache-control", NO_STORE) not in headers:
                headers.append((b"vary", b"accept-encoding"))
            if compress:
                body = gzip(body)
                headers.append((b"content-encoding", b"gzip"))
        headers.append((b"content-type", content_type))
        headers.append((b"content-length", b"%d" % len(body)))
    security = response.security
    if security is None:
        html = content_type is not None and content_type.startswith(b"text/html")
        security = PAGE_SECURITY if html else DATA_SECURITY
    headers += security
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


async def _send_stream(scope: Scope, send: Send, response: Response, stream: Streamed) -> None:
    headers = response.headers
    if response.content_type is not None:
        headers.append((b"content-type", response.content_type))
    if stream.length is not None:
        headers.append((b"content-length", b"%d" % stream.length))
    headers += response.security or ()
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if scope["method"] != "HEAD":
        pieces = stream.pieces()
        while True:
            try:
                piece = await anext(pieces)
            except StopAsyncIteration:
                break
            except Exception as exc:
                raise StreamCut(str(exc)) from exc
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
