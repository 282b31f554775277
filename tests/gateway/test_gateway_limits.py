"""Abuse limits end to end: lookups per pass, joins per client, trusted proxies, /readyz.

Real Redis, real lookup backend, real gateways on real ports.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.e2e import (
    JSON,
    GatewayFactory,
    candidate_form,
    join,
    student,
    wait_for_credit,
)
from tests.support.gateway_support import BACKEND_KEYS, make_settings
from tests.support.servers import serving
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.errors import ConfigError
from waitroom.gateway.app import create_app
from waitroom.line.keys import RoomKeys
from waitroom.lookup.app import create_app as create_backend
from waitroom.room.abuse import client_address, parse_networks
from waitroom.room.tickets import CLOCK_SKEW_S, PASS_COOKIE, TICKET_COOKIE
from waitroom.settings import Settings
from waitroom.shared.processes import free_port

KEYS = RoomKeys("results")


def _cookies(session: aiohttp.ClientSession) -> dict[str, str]:
    return {c.key: c.value for c in session.cookie_jar}


async def _admitted(session: aiohttp.ClientSession, base: str) -> str:
    """Join an idle room until admitted; the pass."""
    deadline = time.monotonic() + 10
    while PASS_COOKIE not in _cookies(session):
        assert time.monotonic() < deadline, "never admitted"
        await join(session, base)
        await asyncio.sleep(0.05)
    return _cookies(session)[PASS_COOKIE]


async def _lookup(session: aiohttp.ClientSession, base: str, k: int = 0) -> tuple[int, Any]:
    async with session.post(base + "/api/result", json=candidate_form(k)) as response:
        return response.status, await response.json(content_type=None)


# -- who the client is ---------------------------------------------------------------

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.1", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # No trusted proxy in the way: the header is the client's own claim, ignored.
        ("203.0.113.9", ["1.2.3.4"], "203.0.113.9"),
        # One trusted hop: the address it saw.
        ("10.1.2.3", ["198.51.100.7"], "198.51.100.7"),
        # The client's own claim on the left is skipped; the hops' records are read.
        ("10.1.2.3", ["6.6.6.6, 198.51.100.7, 10.9.9.9"], "198.51.100.7"),
        # Several headers count as one list, in order.
        ("10.1.2.3", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),
        # Ports, brackets and IPv4-mapped IPv6 as proxies write them.
        ("10.1.2.3", ["198.51.100.7:5123"], "198.51.100.7"),
        ("10.1.2.3", ["[2001:db8:1:2::99]:443"], "2001:db8:1:2::/64"),
        ("::ffff:10.1.2.3", ["::ffff:198.51.100.7"], "198.51.100.7"),
        # IPv6 clients count per /64.
        ("2001:db8:1:2::5", [], "2001:db8:1:2::/64"),
        ("2001:db8:ffff::1", ["2001:db8:7:7:1:2:3:4"], "2001:db8:7:7::/64"),
        # Garbage cannot come from a trusted hop: stop at the hop that passed it on.
        ("10.1.2.3", ["not-an-ip"], "10.1.2.3"),
        ("10.1.2.3", ["198.51.100.7, junk, 10.2.2.2"], "10.2.2.2"),
        # Only trusted addresses: the furthest one.
        ("10.1.2.3", ["10.7.7.7, 192.0.2.1"], "10.7.7.7"),
        # No address (a unix socket): only a local proxy can connect there.
        (None, ["198.51.100.7"], "198.51.100.7"),
        (None, [], "local"),
    ],
)
def test_client_address_trusts_only_configured_proxies(
    peer: str | None, xff: list[str], expected: str
) -> None:
    forwarded = [value.encode() for value in xff]
    assert client_address(peer, forwarded, PROXIES) == expected


def test_limit_settings_are_checked_and_named() -> None:
    base = {"WAITROOM_MODE": "test", "WAITROOM_SECRET_KEYS": "x", "WAITROOM_BACKEND_SECRET": "y"}
    settings = Settings.from_env({**base, "WAITROOM_TRUSTED_PROXIES": "10.0.0.1/8, ::1"})
    assert settings.trusted_proxies == ("10.0.0.0/8", "::1/128")
    defaults = Settings.from_env(base)
    assert (defaults.pass_max_lookups, defaults.join_limit, defaults.join_window_s) == (10, 60, 60)
    assert defaults.trusted_proxies == ()
    with pytest.raises(ConfigError, match=r"WAITROOM_TRUSTED_PROXIES='10\.0\.0\.0/8,lb'.*'lb'"):
        Settings.from_env({**base, "WAITROOM_TRUSTED_PROXIES": "10.0.0.0/8,lb"})
    with pytest.raises(ConfigError, match="WAITROOM_PASS_MAX_LOOKUPS=-1"):
        Settings.from_env({**base, "WAITROOM_PASS_MAX_LOOKUPS": "-1"})
    with pytest.raises(ConfigError, match="WAITROOM_JOIN_WINDOW_S=0"):
        Settings.from_env({**base, "WAITROOM_JOIN_WINDOW_S": "0"})
    with pytest.raises(ConfigError, match="WAITROOM_TRUSTED_PROXIES"):
        make_settings("redis://127.0.0.1/0", trusted_proxies=("lb.internal",))


# -- lookups per pass ----------------------------------------------------------------


async def test_a_pass_buys_a_bounded_number_of_lookups(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(rate=50.0, pass_max_lookups=3, pass_ttl_s=120) as gw, student() as s:
        await wait_for_credit(gw.url)
        token = await _admitted(s, gw.url)
        for k in range(3):
            code, body = await _lookup(s, gw.url, k)
            assert code == 200 and body["roll"] == candidate_form(k)["roll"]
        code, body = await _lookup(s, gw.url)
        assert code == 429
        assert body["error"] == "lookup_limit" and body["limit"] == 3
        assert body["join_url"] == "/" and "Join the line again" in body["message"]
        # The spent pass is dropped: the next visit joins the line at the back.
        assert PASS_COOKIE not in _cookies(s)
        code, body = await join(s, gw.url)
        assert body["state"] in ("waiting", "admitted")
        # The counter lives as long as the pass can (with the clock tolerance), no more.
        pass_id = await _pass_id(redis_client, token)
        ttl = await redis_client.pttl(KEYS.lookups(pass_id))
        assert 100_000 < ttl <= (120 + CLOCK_SKEW_S) * 1000


async def _pass_id(redis_client: aioredis.Redis, token: str) -> str:
    keys = [k.decode() async for k in redis_client.scan_iter(match=KEYS.lookups("*"))]
    assert len(keys) == 1, keys
    return keys[0].rsplit(":", 1)[1]


async def test_a_shared_pass_stops_at_the_limit_on_every_device_and_node(
    gateway: GatewayFactory,
) -> None:
    async with gateway(rate=50.0, pass_max_lookups=5) as a, gateway(pass_max_lookups=5) as b:
        await wait_for_credit(a.url)
        async with student() as owner:
            token = await _admitted(owner, a.url)
        # Twenty devices with a copy of the pass, all at once, half on each node.
        devices = [student() for _ in range(20)]
        try:
            for device in devices:
                device.cookie_jar.update_cookies({PASS_COOKIE: token})
            answers = await asyncio.gather(
                *(_lookup(d, (a, b)[i % 2].url, i) for i, d in enumerate(devices))
            )
        finally:
            for device in devices:
                await device.close()
        codes = [code for code, _ in answers]
        # Counted atomically in Redis: exactly the limit, however the requests race.
        assert codes.count(200) == 5 and codes.count(429) == 15, codes


async def test_the_html_page_says_the_lookups_are_used_up(gateway: GatewayFactory) -> None:
    async with gateway(rate=50.0, pass_max_lookups=1) as gw, student() as s:
        await wait_for_credit(gw.url)
        await _admitted(s, gw.url)
        async with s.post(gw.url + "/result", data=candidate_form(1)) as response:
            assert response.status == 200
        async with s.post(gw.url + "/result", data=candidate_form(1)) as response:
            html = await response.text()
            assert response.status == 429
        assert "Each turn allows 1 result lookups" in html and 'href="/"' in html
        assert "Traceback" not in html


async def test_the_lookup_that_trades_the_ticket_counts_too(gateway: GatewayFactory) -> None:
    async with gateway(rate=1.0, pass_max_lookups=2) as gw, student() as first, student() as s:
        await wait_for_credit(gw.url)
        await join(first, gw.url)  # takes the only credit
        await join(s, gw.url)
        deadline = time.monotonic() + 10
        while True:  # the student's first lookup is the one that reaches the front
            async with s.post(gw.url + "/api/result", json=candidate_form(0)) as response:
                if response.status == 200:
                    break
                assert response.status == 202, response.status
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        assert PASS_COOKIE in _cookies(s) and TICKET_COOKIE not in _cookies(s)
        assert (await _lookup(s, gw.url))[0] == 200
        assert (await _lookup(s, gw.url))[0] == 429


async def test_lookups_the_backend_did_not_make_are_given_back(
    redis_url: str, results_db: Path, redis_sync: Any
) -> None:
    port = free_port()
    settings = make_settings(
        redis_url,
        rate=50.0,
        pass_max_lookups=2,
        backend_url=f"http://127.0.0.1:{port}",
        backend_connect_timeout_s=0.5,
    )
    async with serving(create_app(settings)) as gw, student() as s:
        await wait_for_credit(gw.url)
        await _admitted(s, gw.url)  # the backend is down: a busy page, but a pass
        for _ in range(4):  # an outage longer than the limit
            code, body = await _lookup(s, gw.url)
            assert code == 503 and body["state"] == "busy"
        async with serving(create_backend(results_db, admission_keys=BACKEND_KEYS), port):
            # Malformed input was not looked up: it does not count either.
            async with s.post(gw.url + "/api/result", json={"roll": "x"}) as response:
                assert response.status == 400
            assert (await _lookup(s, gw.url, 1))[0] == 200
            # A wrong date of birth is a lookup (or a pass would buy unlimited guesses).
            async with s.post(
                gw.url + "/api/result", json={**candidate_form(1), "dob": "1990-01-01"}
            ) as response:
                assert response.status == 404
            assert (await _lookup(s, gw.url, 1))[0] == 429


async def test_counting_fails_open_while_redis_is_away(backend: Any) -> None:
    with EmbeddedRedis() as server:
        settings = make_settings(server.url, rate=50.0, pass_max_lookups=1, backend_url=backend.url)
        async with serving(create_app(settings)) as gw, student() as s:
            await wait_for_credit(gw.url)
            await _admitted(s, gw.url)
            assert (await _lookup(s, gw.url))[0] == 200
            server.stop()
            await asyncio.sleep(0.3)  # the view notices
            for k in range(3):  # an admitted student is never stranded by an outage
                assert (await _lookup(s, gw.url, k))[0] == 200
            server.start()


# -- joins per client ----------------------------------------------------------------


async def test_one_client_cannot_hold_many_places(gateway: GatewayFactory) -> None:
    async with gateway(rate=0.5, join_limit=3, join_window_s=30) as gw:
        await wait_for_credit(gw.url)
        holders = [student() for _ in range(4)]
        try:
            answers = [await join(s, gw.url) for s in holders]
            assert [code for code, _ in answers[:3]] in ([200, 202, 202], [202, 202, 202])
            code, body = answers[3]
            assert code == 429 and body["error"] == "too_many_joins"
            assert 1 <= body["retry_after_s"] <= 30
            assert TICKET_COOKIE not in _cookies(holders[3])
            async with holders[3].get(gw.url + "/") as response:  # in HTML: calm, retries
                html = await response.text()
                assert response.status == 429
                assert 1 <= int(response.headers["Retry-After"]) <= 30
                assert "tries again by itself" in html and 'http-equiv="refresh"' in html
            # Places already held are untouched: their holders poll without joining.
            async with holders[2].get(gw.url + "/status") as response:
                assert (await response.json())["position"] == answers[2][1]["position"]
        finally:
            for s in holders:
                await s.close()


async def test_join_limit_follows_x_forwarded_for_only_from_trusted_proxies(
    gateway: GatewayFactory,
) -> None:
    async def join_as(base: str, xff: str) -> int:
        async with student() as s, s.get(base + "/", headers={**JSON, "X-Forwarded-For": xff}) as r:
            return r.status

    # Behind a trusted proxy (the test client is 127.0.0.1): each forwarded client
    # has its own allowance, held across nodes through Redis.
    async with (
        gateway(rate=0.5, join_limit=2, trusted_proxies=("127.0.0.1",)) as a,
        gateway(rate=0.5, join_limit=2, trusted_proxies=("127.0.0.1",)) as b,
    ):
        await wait_for_credit(a.url)
        codes = [await join_as((a, b)[i % 2].url, "198.51.100.7") for i in range(3)]
        assert codes[2] == 429 and 429 not in codes[:2]
        assert await join_as(a.url, "198.51.100.8") != 429
    # Without trusted proxies, a forged header buys nothing.
    async with gateway(rate=0.5, join_limit=2) as gw:
        await wait_for_credit(gw.url)
        codes = [await join_as(gw.url, f"198.51.100.{i}") for i in range(3)]
        assert codes[2] == 429 and 429 not in codes[:2]


# -- readiness -----------------------------------------------------------------------


async def test_readyz_names_what_is_missing(backend: Any, results_db: Path) -> None:
    async def ready(base: str) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as c, c.get(base + "/readyz") as response:
            assert response.content_type == "application/json"
            return response.status, await response.json()

    with EmbeddedRedis() as server:
        port = free_port()
        settings = make_settings(
            server.url,
            backend_url=f"http://127.0.0.1:{port}",
            backend_connect_timeout_s=0.5,
        )
        async with serving(create_app(settings)) as gw:
            await wait_for_credit(gw.url)
            code, body = await ready(gw.url)
            assert code == 503 and body["redis"] and not body["backend"]
            assert "origin at" in body["reason"] and "unreachable" in body["reason"]
            async with serving(create_backend(results_db, admission_keys=BACKEND_KEYS), port):
                code, body = await ready(gw.url)
                assert code == 200 and body["ready"] and "reason" not in body
                server.stop()
                await asyncio.sleep(0.3)
                code, body = await ready(gw.url)
                assert code == 503 and not body["redis"] and body["backend"]
                assert "redis" in body["reason"]
                server.start()
                deadline = time.monotonic() + 5
                while (await ready(gw.url))[0] != 200:
                    assert time.monotonic() < deadline, "never ready again"
                    await asyncio.sleep(0.1)
