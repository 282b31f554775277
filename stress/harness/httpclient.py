"""One student's browser connection: keep-alive HTTP/1.1 with a cookie jar.

A full client (aiohttp) spends several times the CPU of this one per request, and a
spike of 14,000 students from one loader process has none to spare. Like a browser,
each student keeps one connection open and reopens it when the server closes it.
Only responses with ``Content-Length`` are understood, which is what every server
here sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from dataclasses import dataclass, field

MAX_HEAD = 64 * 1024
# RFC 2544's range for benchmarks: one address per simulated student, written in a
# header only (all traffic goes to the loopback address).
_CLIENTS = ipaddress.IPv4Network("198.18.0.0/15")


def client_address(n: int) -> str:
    """The address student ``n`` arrives from, as the trusted proxy in front says.

    Each student is their own client for the gateway's per-client join limit, as
    on result day, where students come from many addresses, not from one loader.
    """
    return str(_CLIENTS[n % _CLIENTS.num_addresses])


class HttpError(Exception):
    """The connection failed or the answer made no sense; ``kind`` names which."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; repeated headers joined by "\n"
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name, default)

    def retry_after(self, default: float) -> float:
        try:
            return max(0.0, float(self.headers["retry-after"]))
        except (KeyError, ValueError):
            return default


@dataclass
class Browser:
    """A connection and the cookies of one student."""

    host: str
    port: int
    timeout_s: float
    # Sent as X-Forwarded-For, as a CDN in front would (see ``client_address``).
    forwarded_for: str = ""
    cookies: dict[str, str] = field(default_factory=dict)
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> Response:
        """Send one request; raises ``HttpError`` on a failed or timed-out exchange."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if self.forwarded_for:
            lines.append(f"X-Forwarded-For: {self.forwarded_for}")
        if self.cookies:
            lines.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if body or method == "POST":
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        try:
            async with asyncio.timeout(self.timeout_s):
                reused = self._writer is not None
                try:
                    response = await self._exchange(raw)
                except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
                    answered = isinstance(exc, asyncio.IncompleteReadError) and exc.partial
                    if not reused or answered:
                        raise
                    # The server closed a connection that sat idle past its keep-alive
                    # timeout; a browser sends the request again on a new one.
                    self.close()
                    response = await self._exchange(raw)
        except TimeoutError:
            self.close()
            raise HttpError("timeout") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            self.close()
            raise HttpError(type(exc).__name__) from exc
        except HttpError:
            self.close()
            raise
        self._keep(response)
        if response.header("connection").lower() == "close":
            self.close()
        return response

    async def _exchange(self, raw: bytes) -> Response:
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            except OSError as exc:
                raise HttpError(f"connect: {type(exc).__name__}") from exc
        assert self._reader is not None
        self._writer.write(raw)
        return await self._read(self._reader)

    async def _read(self, reader: asyncio.StreamReader) -> Response:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_HEAD:
            raise HttpError("head too large")
        lines = head[:-4].decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError("bad status line") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}\n{value}" if key in headers else value
        if "chunked" in headers.get("transfer-encoding", ""):
            raise HttpError("chunked response")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError("bad content-length") from None
        body = await reader.readexactly(length) if length else b""
        return Response(status, headers, body)

    def _keep(self, response: Response) -> None:
        for line in response.header("set-cookie").split("\n"):
            if not line:
                continue
            pair, _, attributes = line.partition(";")
            name, _, value = pair.strip().partition("=")
            lowered = attributes.lower().replace(" ", "")
            # Quart deletes a cookie with Max-Age=0 and an expiry in 1970.
            if "max-age=0" in lowered or value in ("", '""'):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._reader = self._writer = None
