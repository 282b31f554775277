"""The gateway end to end: real Redis, real lookup backend, real HTTP servers."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from tests.support.e2e import (
    JSON,
    GatewayFactory,
    candidate_form,
    forge,
    join,
    status,
    student,
    wait_for_credit,
)
from tests.support.gateway_support import BACKEND_KEYS, TEST_KEYS, make_settings
from tests.support.servers import Server, serving
from waitroom.devtools.embedded_redis import EmbeddedRedis
from waitroom.gateway.app import create_app
from waitroom.line.keys import RoomKeys
from waitroom.lookup import sample
from waitroom.lookup.app import create_app as create_backend
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.settings import Settings
from waitroom.shared.processes import free_port

# -- admission -----------------------------------------------------------------------


async def test_idle_room_admits_at_once_and_forwards(gateway: GatewayFactory) -> None:
    async with gateway(rate=50.0) as gw:
        await wait_for_credit(gw.url)
        async with student() as s:
            async with s.get(gw.url + "/") as response:
                html = await response.text()
                assert response.status == 200
                assert "<form" in html and 'name="roll"' in html  # the backend's form
            assert PASS_COOKIE in {c.key for c in s.cookie_jar}
            async with s.post(gw.url + "/api/result", json=candidate_form(3)) as response:
                assert response.status == 200
                body = await response.json()
            expected = sample.candidate(sample.DEFAULT_SEED, 3)
            assert body["roll"] == expected.roll
            assert body["name"] == expected.name
            # The HTML route answers too, with the same candidate.
            async with s.post(gw.url + "/result", data=candidate_form(3)) as response:
                assert response.status == 200
                assert expected.name in await response.text()


async def test_crowd_waits_and_json_clients_get_json(gateway: GatewayFactory) -> None:
    async with gateway(rate=1.0) as gw:
        await wait_for_credit(gw.url)
        sessions = [student() for _ in range(6)]
        try:
            answers = [await join(s, gw.url) for s in sessions]
            waiting = [body for code, body in answers if code == 202]
            assert len(waiting) >= 4
            for body in waiting:
                assert body["state"] == "waiting"
                assert {"position", "ahead", "eta_s", "retry_after_s"} <= body.keys()
                assert 0 <= body["ahead"] < body["position"]
                assert body["retry_after_s"] >= 1
            positions = [body["position"] for body in waiting]
            assert positions == sorted(positions) and len(set(positions)) == len(positions)
            # A refresh keeps the place: same position, never a new one.
            again = await status(sessions[-1], gw.url)
            assert again["position"] == waiting[-1]["position"]
        finally:
            for s in sessions:
                await s.close()


async def test_progress_page_is_light_and_honest(gateway: GatewayFactory) -> None:
    async with gateway(rate=1.0) as gw, student() as first, student() as s:
        await wait_for_credit(gw.url)
        await join(first, gw.url)  # takes the only credit
        async with s.get(gw.url + "/", headers={"Accept-Language": "hi-IN,hi;q=0.9"}) as r:
            assert r.status == 200
            html = await r.text()
            assert r.headers["Cache-Control"] == "no-store"
            assert int(r.headers["Retry-After"]) >= 1
        assert 'lang="hi"' in html and "कतार" in html
        assert 'aria-live="polite"' in html
        assert re.search(r'<meta http-equiv="refresh" content="\d+">', html)
        total = len(html.encode())
        async with aiohttp.ClientSession() as plain:
            for path in re.findall(r'(?:href|src)="(/static/[^"]+)"', html):
                async with plain.get(gw.url + path) as asset:
                    assert asset.status == 200
                    assert "immutable" in asset.headers["Cache-Control"]
                    total += len(await asset.read())
        assert total < 15 * 1024, total


async def test_admission_follows_position_order(gateway: GatewayFactory) -> None:
    async with gateway(rate=8.0) as gw:
        await wait_for_credit(gw.url)
        sessions = [student() for _ in range(16)]
        try:
            positions = {}
            for s in sessions:
                _, body = await join(s, gw.url)
                positions[id(s)] = body.get("position", 0)
            ready_order: list[int] = []
            deadline = time.monotonic() + 10
            pending = [s for s in sessions if positions[id(s)]]
            while pending and time.monotonic() < deadline:
                for s in list(pending):
                    if (await status(s, gw.url))["state"] == "ready":
                        ready_order.append(positions[id(s)])
                        pending.remove(s)
                await asyncio.sleep(0.02)
            assert not pending
            # Seen in strictly increasing order, up to what one poll sweep can catch
            # together: never someone behind before someone ahead across sweeps.
            assert ready_order == sorted(ready_order) or _inversions(ready_order) <= 1
        finally:
            for s in sessions:
                await s.close()


def _inversions(order: list[int]) -> int:
    return sum(
        1 for i in range(len(order)) for j in range(i + 1, len(order)) if order[i] > order[j]
    )


async def test_two_gateways_admit_each_position_once(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(rate=20.0) as a, gateway(rate=20.0) as b:
        await wait_for_credit(a.url)
        await wait_for_credit(b.url)
        sessions = [student() for _ in range(30)]
        try:
            seen = [await join(s, (a, b)[i % 2].url) for i, s in enumerate(sessions)]
            waiting_positions = [body["position"] for code, body in seen if code == 202]
            deadline = time.monotonic() + 10
            admitted = 0
            for i, s in enumerate(sessions):
                while time.monotonic() < deadline:
                    async with s.get((b, a)[i % 2].url + "/") as response:  # other node
                        if PASS_COOKIE in {c.key for c in s.cookie_jar}:
                            assert response.status == 200
                            admitted += 1
                            break
                    await asyncio.sleep(0.05)
            assert admitted == 30
            assert len(set(waiting_positions)) == len(waiting_positions)
            state = await redis_client.hgetall(RoomKeys("results").state)
            assert int(state[b"admitted"]) == int(state[b"frontier"]) == 30
        finally:
            for s in sessions:
                await s.close()


# -- tickets -------------------------------------------------------------------------


async def _epoch(redis_client: aioredis.Redis) -> str:
    value = await redis_client.hget(RoomKeys("results").state, "epoch")
    return value.decode() if value else ""


@pytest.mark.parametrize(
    ("label", "make", "notice"),
    [
        ("garbled", lambda epoch: "not-a-ticket", "rejected_garbled"),
        (
            "tampered",
            lambda epoch: (
                forge(TEST_KEYS, "waitroom.ticket", ["results", 1, "x", epoch, 0])[:-3] + "AAA"
            ),
            "rejected_tampered",
        ),
        (
            "wrong key",
            lambda epoch: forge(
                ("another-secret-key-000000",), "waitroom.ticket", ["results", 1, "x", epoch, 0]
            ),
            "rejected_tampered",
        ),
        (
            "foreign room",
            lambda epoch: forge(TEST_KEYS, "waitroom.ticket", ["elsewhere", 1, "x", epoch, 0]),
            "rejected_foreign",
        ),
        (
            "expired",
            lambda epoch: forge(
                TEST_KEYS, "waitroom.ticket", ["results", 1, "x", epoch, 0], age_s=13 * 3600
            ),
            "rejected_expired",
        ),
    ],
)
async def test_bad_ticket_goes_to_the_back_with_a_reason(
    gateway: GatewayFactory,
    redis_client: aioredis.Redis,
    label: str,
    make: Callable[[str], str],
    notice: str,
) -> None:
    async with gateway(rate=0.5) as gw, student() as first:
        await wait_for_credit(gw.url)
        await join(first, gw.url)
        await join(first, gw.url)
        token = make(await _epoch(redis_client))
        async with student() as s:
            s.cookie_jar.update_cookies({TICKET_COOKIE: token})
            async with s.get(gw.url + "/status") as response:
                body = await response.json()
            assert body["notice"] == notice, label
            assert body["state"] == "waiting" and body["position"] > 1
        async with student() as s:  # in HTML, the page says why, calmly
            s.cookie_jar.update_cookies({TICKET_COOKIE: token})
            async with s.get(gw.url + "/") as response:
                assert response.status == 200
                assert "end of the line" in await response.text()


async def test_rotated_key_still_honours_old_tickets(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(rate=0.5) as gw, student() as first:
        await wait_for_credit(gw.url)
        await join(first, gw.url)
        _, body = await join(first, gw.url)
    old = body["position"] if body else 1
    token = forge(
        TEST_KEYS, "waitroom.ticket", ["results", old, "x", await _epoch(redis_client), 0]
    )
    async with gateway(rate=0.5, secret_keys=("brand-new-key-0123456789", *TEST_KEYS)) as gw:
        async with student() as s:
            s.cookie_jar.update_cookies({TICKET_COOKIE: token})
            answer = await status(s, gw.url)
            assert answer["position"] == old and "notice" not in answer


async def test_expired_pass_sends_back_to_the_line(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(rate=0.5) as gw, student() as first:
        await wait_for_credit(gw.url)
        await join(first, gw.url)
        token = forge(
            TEST_KEYS, "waitroom.pass", ["results", "abc", await _epoch(redis_client)], age_s=3600
        )
        async with student() as s:
            s.cookie_jar.update_cookies({PASS_COOKIE: token})
            code, body = await join(s, gw.url)
            assert code == 202 and body["notice"] == "pass_expired"


# -- faults --------------------------------------------------------------------------


async def test_backend_down_gives_busy_page_and_keeps_the_pass(
    redis_url: str, results_db: Path, redis_sync: Any
) -> None:
    port = free_port()
    settings = make_settings(
        redis_url, rate=50.0, backend_url=f"http://127.0.0.1:{port}", backend_connect_timeout_s=0.5
    )
    async with serving(create_app(settings)) as gw, student() as s:
        await wait_for_credit(gw.url)
        async with s.get(gw.url + "/") as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert "busy" in (await response.text()).lower()
        pass_cookie = {c.key: c.value for c in s.cookie_jar}[PASS_COOKIE]
        async with s.post(gw.url + "/api/result", json=candidate_form()) as response:
            assert response.status == 503
            assert (await response.json())["state"] == "busy"
        async with s.post(gw.url + "/result", data=candidate_form()) as response:
            html = await response.text()
            assert response.status == 503 and "data-autosubmit" in html
        # The backend comes back: the same pass gets the result, no queueing again.
        backend = create_backend(results_db, admission_keys=BACKEND_KEYS)
        async with serving(backend, port):
            async with s.post(gw.url + "/api/result", json=candidate_form()) as response:
                assert response.status == 200
        assert {c.key: c.value for c in s.cookie_jar}[PASS_COOKIE] == pass_cookie


async def test_redis_restart_mid_queue_keeps_places(backend: Server) -> None:
    with EmbeddedRedis() as server:
        settings = make_settings(server.url, rate=0.5, backend_url=backend.url)
        async with serving(create_app(settings)) as gw:
            await wait_for_credit(gw.url)
            async with student() as first, student() as s:
                await join(first, gw.url)
                await join(first, gw.url)
                code, before = await join(s, gw.url)
                assert code == 202
                server.stop(save=True)
                await asyncio.sleep(0.5)
                during = await status(s, gw.url)
                assert during["position"] == before["position"]
                assert during["reconnecting"] is True
                async with s.get(gw.url + "/queue/state") as response:
                    assert (await response.json())["stale"] is True
                async with student() as newcomer:
                    async with newcomer.get(gw.url + "/") as response:
                        assert response.status == 503
                        assert "Please wait" in await response.text()
                server.start()
                deadline = time.monotonic() + 5
                while (await status(s, gw.url))["reconnecting"] and time.monotonic() < deadline:
                    await asyncio.sleep(0.1)
                after = await status(s, gw.url)
                assert after["position"] == before["position"] and not after["reconnecting"]
                async with student() as newcomer:
                    code, body = await join(newcomer, gw.url)
                    assert code == 202 and body["position"] > before["position"]


# -- the lean layer ------------------------------------------------------------------


async def test_public_queue_state_is_cacheable(gateway: GatewayFactory) -> None:
    async with gateway(rate=1.0) as gw, aiohttp.ClientSession() as client:
        await wait_for_credit(gw.url)
        async with client.get(gw.url + "/queue/state") as response:
            assert response.status == 200
            assert "max-age" in response.headers["Cache-Control"]
            etag = response.headers["ETag"]
            body = await response.json()
        assert {"frontier", "last_position", "rate", "epoch"} <= body.keys()
        async with client.get(gw.url + "/queue/state", headers={"If-None-Match": etag}) as r:
            assert r.status in (200, 304)  # 200 only if the frontier moved in between


def test_production_refuses_a_default_secret() -> None:
    from waitroom.errors import ConfigError

    with pytest.raises(ConfigError, match="WAITROOM_SECRET_KEYS"):
        Settings(mode="production", secret_keys=("change-me",), backend_secret=BACKEND_KEYS)
    with pytest.raises(ConfigError, match="WAITROOM_RATE"):
        Settings.from_env(
            {
                "WAITROOM_RATE": "0",
                "WAITROOM_MODE": "test",
                "WAITROOM_SECRET_KEYS": "x",
                "WAITROOM_BACKEND_SECRET": "y",
            }
        )
    with pytest.raises(ConfigError, match="WAITROOM_MAX_ACTIVE='lots'"):
        Settings.from_env({"WAITROOM_MAX_ACTIVE": "lots"})


async def test_admitted_json_client_gets_json_and_a_pass(gateway: GatewayFactory) -> None:
    async with gateway(rate=50.0) as gw, student() as s:
        await wait_for_credit(gw.url)
        code, body = await join(s, gw.url)
        assert code == 200 and body["state"] == "admitted"
        assert body["result_url"] == "/api/result"
        assert PASS_COOKIE in {c.key for c in s.cookie_jar}
        again = await status(s, gw.url)
        assert again["state"] == "admitted"


async def _broken_backend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A backend that fails: 500 on /api/result, a 3 s stall on /result."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/result":
        await asyncio.sleep(3)
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b"Traceback (most recent call last)"})


async def test_backend_5xx_or_slow_never_reaches_the_student(
    redis_url: str, redis_sync: Any
) -> None:
    async with serving(_broken_backend) as broken:
        settings = make_settings(
            redis_url, rate=50.0, backend_url=broken.url, backend_read_timeout_s=0.5
        )
        async with serving(create_app(settings)) as gw, student() as s:
            await wait_for_credit(gw.url)
            await join(s, gw.url)
            async with s.post(gw.url + "/api/result", json=candidate_form()) as response:
                assert response.status == 503 and response.headers["Retry-After"] == "5"
                assert (await response.json())["state"] == "busy"
            started = time.monotonic()
            async with s.post(gw.url + "/result", data=candidate_form()) as response:
                text = await response.text()
            assert time.monotonic() - started < 2.5  # the read timeout, not the stall
            assert response.status == 503 and "Traceback" not in text
            assert "retrying automatically" in text


async def test_waiting_status_code_is_configurable(gateway: GatewayFactory) -> None:
    async with gateway(rate=0.5, waiting_status=429) as gw, student() as first:
        await wait_for_credit(gw.url)
        await join(first, gw.url)
        async with student() as s, s.get(gw.url + "/") as response:
            assert response.status == 429
            assert "You are in line" in await response.text()


async def test_a_ticket_is_traded_for_a_pass_only_once(gateway: GatewayFactory) -> None:
    async with gateway(rate=0.5) as gw, student() as first, student() as owner:
        await wait_for_credit(gw.url)
        await join(first, gw.url)  # takes the only credit
        _, waiting = await join(owner, gw.url)
        ticket = {c.key: c.value for c in owner.cookie_jar}[TICKET_COOKIE]
        deadline = time.monotonic() + 10
        while (await status(owner, gw.url))["state"] != "ready":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        async with owner.get(gw.url + "/") as response:
            assert response.status == 200
        assert PASS_COOKIE in {c.key for c in owner.cookie_jar}
        # A copy of the spent ticket, kept or shared, buys no second pass.
        async with student() as copy:
            copy.cookie_jar.update_cookies({TICKET_COOKIE: ticket})
            async with copy.get(gw.url + "/", headers=JSON) as response:
                body = await response.json()
            assert response.status == 202 and body["notice"] == "rejected_spent"
            assert body["position"] > waiting["position"]
            assert PASS_COOKIE not in {c.key for c in copy.cookie_jar}


def test_settings_never_show_secrets() -> None:
    settings = make_settings("redis://127.0.0.1:6379/0")
    assert TEST_KEYS[0] not in repr(settings) and BACKEND_KEYS[0] not in repr(settings)


def test_every_message_exists_in_every_language() -> None:
    from waitroom.gateway.i18n import MESSAGES
    from waitroom.shared.languages import LANGUAGES

    keys = {lang: set(MESSAGES[lang]) for lang in LANGUAGES}
    assert keys["en"] == keys["hi"]
