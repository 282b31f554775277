"""Forwarding admitted requests to the lookup backend.

One pooled keep-alive client per worker (aiohttp), opened when the app starts
serving and closed when it stops, with connect and read timeouts. Every request
carries the signed admission header that the backend checks, so the backend
serves nobody who skipped the line. A backend that is down, slow, or answering
5xx becomes ``BackendUnavailable``; the caller shows the "busy, retrying" page.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import aiohttp

from lookup.admission import HEADER as ADMISSION_HEADER
from lookup.admission import AdmissionSigner
from waitroom.config import Settings
from waitroom.errors import BackendUnavailable

log = logging.getLogger(__name__)

# Request headers worth passing on; everything else (cookies above all) stays here.
_FORWARD_REQUEST = ("content-type", "accept", "accept-language", "user-agent")
_FORWARD_RESPONSE = ("content-type", "content-language", "cache-control")


@dataclass(frozen=True)
class BackendResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Forwarder:
    def __init__(self, settings: Settings) -> None:
        self.base = settings.backend_url.rstrip("/")
        self.room = settings.room
        self.settings = settings
        self.admission = AdmissionSigner(settings.backend_secret)
        self._session: aiohttp.ClientSession | None = None
        # Names this worker in the admission token (the pass stays at the gateway).
        self.worker = f"gw-{os.getpid()}"

    async def start(self) -> None:
        s = self.settings
        connector = aiohttp.TCPConnector(
            limit=s.backend_pool_size, keepalive_timeout=30, enable_cleanup_closed=True
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=s.backend_connect_timeout_s,
            sock_connect=s.backend_connect_timeout_s,
            sock_read=s.backend_read_timeout_s,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            auto_decompress=False,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> BackendResponse:
        if self._session is None:
            raise BackendUnavailable(self.base, "gateway is not serving yet")
        out = {k: v for k, v in headers.items() if k.lower() in _FORWARD_REQUEST}
        out[ADMISSION_HEADER] = self.admission.reusable(self.room, self.worker)
        url = self.base + path
        try:
            async with self._session.request(method, url, headers=out, data=body) as resp:
                payload = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise BackendUnavailable(url, f"{type(exc).__name__}: {exc}") from exc
        if resp.status >= 500:
            raise BackendUnavailable(url, f"answered {resp.status}")
        if resp.status == 403:
            # The backend refused our admission header: a secret mismatch between
            # gateway and backend. Students must not see a "forbidden" for it.
            log.error(
                "waitroom: backend at %s refused the admission header; check "
                "WAITROOM_BACKEND_SECRET on both sides",
                self.base,
            )
            raise BackendUnavailable(url, "admission header refused (403)")
        kept = {k: v for k, v in resp.headers.items() if k.lower() in _FORWARD_RESPONSE}
        return BackendResponse(resp.status, kept, payload)
