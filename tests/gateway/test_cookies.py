"""Every cookie the gateway sets carries the cookie policy's attributes.

A real gateway is driven through each way a cookie is set or dropped (the ticket,
the pass, the language; the admin's login token and session), and every
``Set-Cookie`` it sends is held to ``COOKIES``: its path, SameSite, HttpOnly, and
Secure exactly when the settings ask for it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from tests.gateway.test_admin import CSRF_RE, HASH, PASSWORD
from tests.support.e2e import GatewayFactory, wait_for_credit
from waitroom.gateway.responses import (
    COOKIES,
    LANG_COOKIE,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    CookiePolicy,
)
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE


class Browser:
    """Sends cookies by hand (a Secure cookie too, over plain HTTP) and keeps every
    ``Set-Cookie`` it is sent."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.jar: dict[str, str] = {}
        self.seen: list[str] = []

    async def go(self, method: str, path: str, **kwargs: Any) -> str:
        cookie = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        headers = {"Cookie": cookie} if cookie else {}
        async with self.session.request(
            method, self.base + path, headers=headers, allow_redirects=False, **kwargs
        ) as response:
            for line in response.headers.getall("Set-Cookie", []):
                self.seen.append(line)
                name, _, rest = line.partition("=")
                value = rest.split(";")[0]
                if "Max-Age=0" in line:
                    self.jar.pop(name, None)
                else:
                    self.jar[name] = value
            return await response.text()


def attributes(line: str) -> tuple[str, bool, dict[str, str]]:
    """(name, dropped, {attribute: value}) of a Set-Cookie line; flags map to ""."""
    first, *rest = [part.strip() for part in line.split(";")]
    name = first.partition("=")[0]
    found = {}
    for part in rest:
        key, _, value = part.partition("=")
        found[key.lower()] = value
    return name, found.get("max-age") == "0", found


@pytest.mark.parametrize("secure", [False, True])
async def test_every_cookie_the_gateway_sets_follows_the_policy(
    gateway: GatewayFactory, secure: bool
) -> None:
    settings = {"admin_password_hash": HASH, "cookie_secure": secure}
    async with (
        gateway(**settings) as gw,
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session,
    ):
        await wait_for_credit(gw.url)
        student = Browser(session, gw.url)
        await student.go("GET", "/status?lang=hi")  # a place: the ticket, the language
        assert TICKET_COOKIE in student.jar and LANG_COOKIE in student.jar
        for _ in range(100):  # until the pacer admits it
            if '"state":"ready"' in await student.go("GET", "/status"):
                break
            await asyncio.sleep(0.05)
        await student.go("GET", "/")  # at the front: a pass, the ticket dropped
        assert PASS_COOKIE in student.jar and TICKET_COOKIE not in student.jar
        student.jar[PASS_COOKIE] = "forged"
        await student.go("GET", "/status")  # a bad pass: dropped, a new ticket
        assert PASS_COOKIE not in student.jar and TICKET_COOKIE in student.jar

        admin = Browser(session, gw.url)
        page = await admin.go("GET", "/admin/login")
        token = CSRF_RE.search(page)
        assert token is not None
        form = {"csrf": token.group(1), "password": PASSWORD}
        await admin.go("POST", "/admin/login", data=form)
        assert SESSION_COOKIE in admin.jar and LOGIN_COOKIE not in admin.jar
        match = CSRF_RE.search(await admin.go("GET", "/admin"))
        assert match is not None
        await admin.go("POST", "/admin/logout", data={"csrf": match.group(1)})
        assert SESSION_COOKIE not in admin.jar

    seen = student.seen + admin.seen
    kinds = set()
    for line in seen:
        name, dropped, found = attributes(line)
        rule = COOKIES[name]
        assert found.get("path") == rule.path, line
        assert found.get("samesite") == rule.same_site, line
        assert ("secure" in found) == secure, line
        assert ("httponly" in found) == (rule.http_only and not dropped), line
        assert re.fullmatch(r"\d+", found.get("max-age", "")), line
        kinds.add((name, dropped))
        # The header is the policy's, byte for byte.
        policy = CookiePolicy(secure)
        value = line.partition("=")[2].split(";")[0]
        expected = policy.drop(name) if dropped else policy.set(name, value, int(found["max-age"]))
        assert expected[1].decode() == line
    assert kinds == {
        (TICKET_COOKIE, False),
        (TICKET_COOKIE, True),
        (PASS_COOKIE, False),
        (PASS_COOKIE, True),
        (LANG_COOKIE, False),
        (LOGIN_COOKIE, False),
        (LOGIN_COOKIE, True),
        (SESSION_COOKIE, False),
        (SESSION_COOKIE, True),
    }, seen
