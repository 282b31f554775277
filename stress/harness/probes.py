"""The few set-up requests a bench makes of a gateway before it loads it.

A handful of requests, so the standard library will do: a page and its cookies, a
ticket that waits, an admission pass, and waiting until the gateway's cached view
(refreshed four times a second) shows what the bench set in Redis.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from http.cookies import SimpleCookie
from typing import Any

from stress.harness.processes import HOST
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE

JSON_ACCEPT = {"Accept": "application/json"}


def get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, SimpleCookie]:
    conn = http.client.HTTPConnection(HOST, port, timeout=5)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        cookies: SimpleCookie = SimpleCookie()
        for value in response.headers.get_all("Set-Cookie") or []:
            cookies.load(value)
        return response.status, body, cookies
    finally:
        conn.close()


def waiting_ticket(port: int) -> str:
    status, body, cookies = get(port, "/", JSON_ACCEPT)
    if status != 202 or TICKET_COOKIE not in cookies:
        raise RuntimeError(f"expected a waiting ticket, got {status}: {body[:200]!r}")
    return cookies[TICKET_COOKIE].value


def admission_pass(port: int, timeout: float = 10) -> str:
    """Join as a new student until admitted (the pacer mints credit within a tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body, cookies = get(port, "/", JSON_ACCEPT)
        if status == 200 and PASS_COOKIE in cookies:
            return cookies[PASS_COOKIE].value
        time.sleep(0.1)
    raise RuntimeError(f"no admission pass within {timeout:.0f} s (last {status}: {body[:200]!r})")


def wait_status(port: int, ticket: str, ok: Callable[[dict[str, Any]], bool]) -> None:
    """Until the gateway's cached view (refreshed 4 times a second) shows what we set."""
    cookie = {"Cookie": f"{TICKET_COOKIE}={ticket}"}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        status, body, _ = get(port, "/status", cookie)
        if status in (200, 202) and ok(json.loads(body)):
            return
        time.sleep(0.1)
    raise RuntimeError(f"gateway status never matched: {status} {body[:200]!r}")
