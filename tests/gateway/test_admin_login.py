"""The admin login under attack: parallel guesses, a balancer in front, the log.

Real gateway servers, real Redis, real scrypt: nothing is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.gateway.test_admin import CSRF_RE, PASSWORD, admin, csrf, login, post
from tests.support.e2e import GatewayFactory, student, wait_for_credit
from waitroom.gateway.admin.auth import MAX_FAILURES
from waitroom.line.keys import RoomKeys

GUESSES = 150


def _wrong_password_checks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "waitroom.gateway.admin.blueprint" and "wrong password" in r.message
    ]


async def test_parallel_guesses_get_at_most_five_password_checks(
    gateway: GatewayFactory, redis_client: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="waitroom.gateway.admin.blueprint")
    async with gateway(**admin()) as gw:
        # One browser's form token and cookie, replayed by every guess at once, on
        # as many connections as there are guesses.
        connector = aiohttp.TCPConnector(limit=0)
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(connector=connector, cookie_jar=jar) as s:
            async with s.get(gw.url + "/admin/login") as response:
                token = CSRF_RE.search(await response.text())
            assert token is not None
            start = asyncio.Event()

            async def guess(k: int) -> int:
                form = {"csrf": token.group(1), "password": f"guess number {k}"}
                await start.wait()
                async with s.post(gw.url + "/admin/login", data=form) as response:
                    await response.read()
                    return response.status

            tasks = [asyncio.create_task(guess(k)) for k in range(GUESSES)]
            await asyncio.sleep(0.2)
            start.set()
            codes = Counter(await asyncio.gather(*tasks))
        # A 401 is answered only after scrypt said no; a 429 before any check.
        assert codes == {401: MAX_FAILURES, 429: GUESSES - MAX_FAILURES}, codes
        assert len(_wrong_password_checks(caplog)) == MAX_FAILURES
        overall = await redis_client.get(RoomKeys("results").login_failures("*"))
        assert int(overall) == MAX_FAILURES
        # The lock-out is logged once, not once per refused guess.
        refusals = [r for r in caplog.records if "locked out" in r.message]
        assert len(refusals) == 1 and "127.0.0.1" in refusals[0].message
        # Even the right password now waits for the window.
        async with student() as s:
            assert await login(s, gw.url) == 429


async def test_behind_a_trusted_balancer_the_lockout_and_audit_use_the_client(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    student_ip, admin_ip = "203.0.113.7", "198.51.100.2"
    async with gateway(**admin(trusted_proxies=("127.0.0.1",))) as gw:
        await wait_for_credit(gw.url)
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            headers={"X-Forwarded-For": f"{student_ip}, 127.0.0.1"},
        ) as guesser:
            for _ in range(MAX_FAILURES):
                assert await login(guesser, gw.url, "guess") == 401
            async with guesser.get(gw.url + "/admin/login") as response:
                token = CSRF_RE.search(await response.text())
            assert token is not None
            form = {"csrf": token.group(1), "password": PASSWORD}
            async with guesser.post(gw.url + "/admin/login", data=form) as response:
                assert response.status == 429
                assert student_ip in await response.text()
        # The admin, behind the same balancer, is someone else.
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"X-Forwarded-For": admin_ip}
        ) as s:
            assert await login(s, gw.url) == 303
            form = {"csrf": await csrf(s, gw.url), "rate": "7"}
            assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
            async with s.get(gw.url + "/admin") as response:
                page = await response.text()
        assert re.search(rf"<td>{re.escape(admin_ip)}</td><td>rate</td>", page), page
        keys = RoomKeys("results")
        assert await redis_client.exists(keys.login_failures(student_ip))
        assert not await redis_client.exists(keys.login_failures("127.0.0.1"))


async def test_without_trusted_proxies_a_forwarded_header_escapes_nothing(
    gateway: GatewayFactory,
) -> None:
    async with gateway(**admin()) as gw:
        for k in range(MAX_FAILURES):
            async with aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True),
                headers={"X-Forwarded-For": f"192.0.2.{k}"},
            ) as s:
                assert await login(s, gw.url, "guess") == 401
        async with aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"X-Forwarded-For": "192.0.2.99"}
        ) as s:
            assert await login(s, gw.url) == 429


async def test_failed_logins_are_logged_with_address_and_reason_never_the_password(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="waitroom.gateway.admin.blueprint")
    secret_guess = "my-very-secret-guess-42"
    async with gateway(**admin()) as gw, student() as s:
        assert await login(s, gw.url, secret_guess) == 401
        async with s.post(gw.url + "/admin/login", data={"password": secret_guess}) as response:
            assert response.status == 400
        assert await login(s, gw.url) == 303
    messages = [
        r.getMessage() for r in caplog.records if r.name == "waitroom.gateway.admin.blueprint"
    ]
    assert any("127.0.0.1" in m and "wrong password" in m for m in messages), messages
    assert any("127.0.0.1" in m and "token" in m for m in messages), messages
    assert any("127.0.0.1" in m and "logged in" in m for m in messages), messages
    assert not any(secret_guess in m or PASSWORD in m for m in messages)
