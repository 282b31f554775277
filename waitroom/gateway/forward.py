"""Forwarding requests to the origin: the lookup backend, or a board's own site.

One pool of keep-alive connections per worker (``upstream.Upstream``), opened when
the app starts serving and closed when it stops, with connect and read timeouts.
What passes is what a reverse proxy passes: any method and path with its query
string, the request's headers but the hop-by-hop ones, the gateway's own cookies
and anything that claims to come from the gateway (``X-Waitroom-*``), a body given
whole or streamed; back come the origin's status, headers (``Set-Cookie`` among
them) and body, with a redirect to the origin's own address made relative so the
browser stays on the gateway.

Every request carries the signed admission header (``X-Waitroom-Admission``): the
lookup backend refuses anything without it, and any origin can check it the same
way (README, "In front of any origin"). An origin that is down, slow, or answering
5xx becomes ``BackendUnavailable``; the caller shows the calm "busy, retrying" page
and the student keeps their place.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

from waitroom.errors import BackendUnavailable
from waitroom.gateway.upstream import StreamedBody, Upstream, UpstreamError, UpstreamResponse
from waitroom.room.telemetry import BackendStats
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.admission import HEADER_BYTES as ADMISSION_HEADER
from waitroom.shared.admission import REFUSED_HEADER_BYTES, AdmissionSigner

log = logging.getLogger(__name__)

# Headers that belong to one hop (RFC 9110 7.6.1): never passed on either way.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# What the client of the next hop sets itself (the host, the framing). An interim
# "100 Continue" would be an answer to nobody here: the body is sent without asking.
_REQUEST_DROPS = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
# The gateway's own: set here, never taken from a client (an admission header from a
# browser would be a forgery) and never passed back from an origin.
_OURS = b"x-waitroom-"
_FORWARDED = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"})
# The cookies that are the gateway's business: a pass or ticket never reaches an origin.
_OUR_COOKIES = frozenset({TICKET_COOKIE.encode(), PASS_COOKIE.encode()})
# Methods safe to send twice when a pooled connection turns out closed (RFC 9110 9.2.2).
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def request_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The client's headers as the origin may see them."""
    named: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            # Connection lists further headers that belong to this hop only.
            named.update(part.strip().lower() for part in value.split(b","))
    out: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name in _REQUEST_DROPS or name in named or name in _FORWARDED or name.startswith(_OURS):
            continue
        if name == b"cookie":
            value = _without_our_cookies(value)
            if not value:
                continue
        out.append((name, value))
    return out


def _without_our_cookies(header: bytes) -> bytes:
    kept = [
        part.strip()
        for part in header.split(b";")
        if part.strip() and part.strip().partition(b"=")[0].strip() not in _OUR_COOKIES
    ]
    return b"; ".join(kept)


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """The origin and how to reach it (``waitroom.gateway.services`` builds it)."""

    url: str
    # The keys the admission header is signed with, newest first.
    secret: tuple[str, ...]
    room: str
    pool_size: int
    connect_timeout_s: float
    read_timeout_s: float


class Forwarder:
    def __init__(self, settings: BackendSettings, stats: BackendStats | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.url = settings.url.rstrip("/")
        self.room = settings.room
        self.admission = AdmissionSigner(settings.secret)
        # Names this worker in the admission token (the pass stays at the gateway).
        self.worker = f"gw-{os.getpid()}"
        self._upstream: Upstream | None = None
        # A redirect to the origin's own address (http://127.0.0.1:8081/x) would
        # send the browser past the gateway: such a Location becomes /x.
        self._own_prefix = self.url.encode("latin-1")

    async def start(self) -> None:
        s = self.settings
        self._upstream = Upstream(
            self.url,
            pool_size=s.pool_size,
            connect_timeout_s=s.connect_timeout_s,
            read_timeout_s=s.read_timeout_s,
        )

    async def close(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the origin answers its health check in time, else why not.

        Any answer below 500 means the origin is up: a board's site need not have a
        ``/healthz``, and a 404 from it is still an answer."""
        upstream = self._upstream
        if upstream is None:
            return "origin: gateway is not serving yet"
        try:
            async with asyncio.timeout(timeout_s):
                answer = await upstream.request("GET", "/healthz", self._signed([]))
        except TimeoutError:
            return f"origin at {self.url} did not answer within {timeout_s:g}s"
        except UpstreamError as exc:
            return f"origin at {self.url} unreachable: {exc}"
        if answer.status >= 500:
            return f"origin at {self.url} answered {answer.status} to /healthz"
        return None

    async def forward(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | StreamedBody,
        about: Iterable[tuple[bytes, bytes]] = (),
        *,
        repeatable: bool = False,
        lookup: bool = False,
    ) -> UpstreamResponse:
        """The origin's answer, with the headers worth passing back.

        ``target`` is the path with its query string; ``about`` is what the gateway
        tells the origin (``waitroom.gateway.lean``: X-Forwarded-*, the student's language,
        lookups and time left). ``repeatable``: safe to send twice although the
        method is not idempotent (a lookup only reads). ``lookup``: to a lookup path,
        counted apart (the work a result site is sized by, which the governor's auto
        rate measures). A streamed answer comes back with ``stream`` set; the caller
        closes it.
        """
        upstream = self._upstream
        if upstream is None:
            raise BackendUnavailable(self.url, "gateway is not serving yet")
        out = request_headers(headers)
        out += about
        if self.stats is not None:
            self.stats.sent(lookup=lookup)
        started = time.perf_counter()
        try:
            answer = await upstream.request(
                method,
                target,
                self._signed(out),
                body,
                retry=repeatable or method in IDEMPOTENT,
                stream=True,
            )
        except UpstreamError as exc:
            self._record(started, ok=False, kind=exc.kind, lookup=lookup)
            raise BackendUnavailable(self.url + target, str(exc)) from exc
        refused = answer.status == 403 and any(k == REFUSED_HEADER_BYTES for k, _ in answer.headers)
        self._record(
            started,
            ok=answer.status < 500 and not refused,
            kind="refused" if refused else "status_5xx",
            lookup=lookup,
        )
        if answer.status >= 500 or refused:
            if answer.stream is not None:
                answer.stream.close()
            if refused:
                # A secret mismatch between gateway and origin: students must not
                # see a "forbidden" for it.
                log.error(
                    "waitroom: origin at %s refused the admission header; check "
                    "WAITROOM_BACKEND_SECRET on both sides",
                    self.url,
                )
                raise BackendUnavailable(self.url + target, "admission header refused (403)")
            raise BackendUnavailable(self.url + target, f"answered {answer.status}")
        return UpstreamResponse(
            answer.status, self._passed_back(answer.headers), answer.body, answer.stream
        )

    def _signed(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        headers.append((ADMISSION_HEADER, self.admission.reusable(self.room, self.worker).encode()))
        return headers

    def _passed_back(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The answer's headers for the client, Content-Length among them (the
        sender decides whether it still holds)."""
        kept = []
        for name, value in headers:
            if name in HOP_BY_HOP or name.startswith(_OURS):
                continue
            if name == b"location" and value.startswith(self._own_prefix):
                rest = value[len(self._own_prefix) :]
                if not rest or rest.startswith((b"/", b"?")):  # not http://origin:80810
                    value = rest if rest.startswith(b"/") else b"/" + rest
            kept.append((name, value))
        return kept

    def _record(self, started: float, *, ok: bool, kind: str = "", lookup: bool = False) -> None:
        if self.stats is not None:
            elapsed = time.perf_counter() - started
            self.stats.record(elapsed, ok, "" if ok else kind, lookup=lookup)
