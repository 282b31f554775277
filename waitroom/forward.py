"""Forwarding admitted requests to the lookup backend.

One pool of keep-alive connections per worker (``upstream.Upstream``), opened when
the app starts serving and closed when it stops, with connect and read timeouts.
Every request carries the signed admission header that the backend checks, so the
backend serves nobody who skipped the line. A backend that is down, slow, or
answering 5xx becomes ``BackendUnavailable``; the caller shows the "busy, retrying"
page. The lean layer (``waitroom.lean``) forwards through here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Iterable

from lookup.admission import HEADER_BYTES as ADMISSION_HEADER
from lookup.admission import AdmissionSigner
from waitroom.config import Settings
from waitroom.errors import BackendUnavailable
from waitroom.telemetry import BackendStats
from waitroom.upstream import Upstream, UpstreamError, UpstreamResponse

log = logging.getLogger(__name__)

# Request headers worth passing on; everything else (cookies above all) stays here.
FORWARD_REQUEST = frozenset({b"content-type", b"accept", b"accept-language", b"user-agent"})
FORWARD_RESPONSE = frozenset({b"content-type", b"content-language", b"cache-control"})


class Forwarder:
    def __init__(self, settings: Settings, stats: BackendStats | None = None) -> None:
        self.settings = settings
        self.stats = stats
        self.url = settings.backend_url.rstrip("/")
        self.room = settings.room
        self.admission = AdmissionSigner(settings.backend_secret)
        # Names this worker in the admission token (the pass stays at the gateway).
        self.worker = f"gw-{os.getpid()}"
        self._upstream: Upstream | None = None

    async def start(self) -> None:
        s = self.settings
        self._upstream = Upstream(
            self.url,
            pool_size=s.backend_pool_size,
            connect_timeout_s=s.backend_connect_timeout_s,
            read_timeout_s=s.backend_read_timeout_s,
        )

    async def close(self) -> None:
        if self._upstream is not None:
            await self._upstream.close()
            self._upstream = None

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the backend answers its health check in time, else why not."""
        upstream = self._upstream
        if upstream is None:
            return "lookup backend: gateway is not serving yet"
        try:
            async with asyncio.timeout(timeout_s):
                answer = await upstream.request("GET", "/healthz", [])
        except TimeoutError:
            return f"lookup backend at {self.url} did not answer within {timeout_s:g}s"
        except UpstreamError as exc:
            return f"lookup backend at {self.url} unreachable: {exc}"
        if answer.status != 200:
            return f"lookup backend at {self.url} answered {answer.status} to /healthz"
        return None

    async def forward(
        self,
        method: str,
        path: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes,
        about: Iterable[tuple[bytes, bytes]] = (),
    ) -> UpstreamResponse:
        """The backend's answer, with only the headers worth passing back.

        ``path`` may carry a query string; ``about`` is what the gateway tells the
        backend of the student (``waitroom.lean``: language, lookups and time left).
        """
        upstream = self._upstream
        if upstream is None:
            raise BackendUnavailable(self.url, "gateway is not serving yet")
        out = [(k, v) for k, v in headers if k in FORWARD_REQUEST]
        out += about
        out.append((ADMISSION_HEADER, self.admission.reusable(self.room, self.worker).encode()))
        if self.stats is not None:
            self.stats.sent()
        started = time.perf_counter()
        try:
            answer = await upstream.request(method, path, out, body)
        except UpstreamError as exc:
            self._record(started, ok=False, kind=exc.kind)
            raise BackendUnavailable(self.url + path, str(exc)) from exc
        self._record(
            started,
            ok=answer.status < 500 and answer.status != 403,
            kind="refused" if answer.status == 403 else "status_5xx",
        )
        if answer.status >= 500:
            raise BackendUnavailable(self.url + path, f"answered {answer.status}")
        if answer.status == 403:
            # The backend refused our admission header: a secret mismatch between
            # gateway and backend. Students must not see a "forbidden" for it.
            log.error(
                "waitroom: backend at %s refused the admission header; check "
                "WAITROOM_BACKEND_SECRET on both sides",
                self.url,
            )
            raise BackendUnavailable(self.url + path, "admission header refused (403)")
        kept = [(k, v) for k, v in answer.headers if k in FORWARD_RESPONSE]
        return UpstreamResponse(answer.status, kept, answer.body)

    def _record(self, started: float, *, ok: bool, kind: str = "") -> None:
        if self.stats is not None:
            self.stats.record(time.perf_counter() - started, ok, "" if ok else kind)
