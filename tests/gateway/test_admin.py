"""The admin page end to end: real Redis, real backend, real gateway servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
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
from tests.support.gateway_support import TEST_KEYS, make_settings
from waitroom.gateway.admin.auth import MAX_FAILURES, SLOW_AFTER, SLOW_DOWN_S
from waitroom.gateway.responses import SESSION_COOKIE
from waitroom.line.keys import RoomKeys
from waitroom.line.state import Queue, Search
from waitroom.room.tickets import PASS_COOKIE, TICKET_COOKIE
from waitroom.shared.passwords import hash_password

PASSWORD = "correct horse battery staple"
HASH = hash_password(PASSWORD)
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


def admin(**overrides: Any) -> dict[str, Any]:
    return {"admin_password_hash": HASH, **overrides}


async def login(s: aiohttp.ClientSession, base: str, password: str = PASSWORD) -> int:
    async with s.get(base + "/admin/login") as response:
        token = CSRF_RE.search(await response.text())
    assert token is not None
    form = {"csrf": token.group(1), "password": password}
    async with s.post(base + "/admin/login", data=form, allow_redirects=False) as response:
        return response.status


async def csrf(s: aiohttp.ClientSession, base: str) -> str:
    async with s.get(base + "/admin") as response:
        assert response.status == 200
        match = CSRF_RE.search(await response.text())
    assert match is not None
    return match.group(1)


async def post(
    s: aiohttp.ClientSession, base: str, path: str, form: dict[str, str]
) -> tuple[int, str]:
    async with s.post(base + path, data=form, allow_redirects=False) as response:
        return response.status, await response.text()


async def live(s: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with s.get(base + "/admin/live.json") as response:
        assert response.status == 200
        body: dict[str, Any] = await response.json()
        return body


async def test_admin_page_is_off_without_a_password_hash(gateway: GatewayFactory) -> None:
    async with gateway() as gw, student() as s:
        async with s.get(gw.url + "/admin") as response:
            assert response.status == 404
            assert "WAITROOM_ADMIN_PASSWORD_HASH" in await response.text()
        async with s.post(gw.url + "/admin/settings", data={"rate": "9"}) as response:
            assert response.status == 404


async def test_login_logout_and_a_copied_cookie_dies_with_the_session(
    gateway: GatewayFactory,
) -> None:
    async with gateway(**admin()) as gw, student() as s:
        async with s.get(gw.url + "/admin", allow_redirects=False) as response:
            assert response.status == 303 and response.headers["Location"] == "/admin/login"
        assert await login(s, gw.url, "wrong password") == 401
        assert await login(s, gw.url) == 303
        cookie = next(c for c in s.cookie_jar if c.key == SESSION_COOKIE)
        assert cookie["httponly"] and cookie["path"] == "/admin"
        async with s.get(gw.url + "/admin") as response:
            page = await response.text()
            assert response.status == 200 and "Live" in page
            assert response.headers["Cache-Control"] == "no-store"
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
        token = await csrf(s, gw.url)
        # A second login gets a new session (no fixation on an old id).
        assert await login(s, gw.url) == 303
        second = next(c for c in s.cookie_jar if c.key == SESSION_COOKIE)
        assert second.value != cookie.value
        token = await csrf(s, gw.url)
        status_, _ = await post(s, gw.url, "/admin/logout", {"csrf": token})
        assert status_ == 303
        # The copied cookie no longer opens the page: the session record is gone.
        async with student() as thief:
            thief.cookie_jar.update_cookies(
                {SESSION_COOKIE: second.value}, aiohttp.client.URL(gw.url + "/admin")
            )
            async with thief.get(gw.url + "/admin", allow_redirects=False) as response:
                assert response.status == 303


async def test_login_needs_the_form_token_and_failures_lock_the_address_out(
    gateway: GatewayFactory,
) -> None:
    async with gateway(**admin()) as gw, student() as s:
        # No token from the login form (a cross-site post): refused before any check.
        async with s.post(gw.url + "/admin/login", data={"password": PASSWORD}) as response:
            assert response.status == 400
        for _ in range(MAX_FAILURES):
            assert await login(s, gw.url, "guess") == 401
        # Locked: even the right password is refused until the window passes.
        async with s.get(gw.url + "/admin/login") as response:
            token = CSRF_RE.search(await response.text())
        assert token is not None
        form = {"csrf": token.group(1), "password": PASSWORD}
        async with s.post(gw.url + "/admin/login", data=form) as response:
            assert response.status == 429
            assert int(response.headers["Retry-After"]) > 60
            assert "Too many failed logins" in await response.text()


async def test_a_change_reaches_every_gateway_within_a_second_and_is_audited(
    gateway: GatewayFactory,
) -> None:
    async with (
        gateway(**admin(rate=5.0)) as gw,
        gateway(**admin(rate=5.0)) as other,
        student() as s,
    ):
        await wait_for_credit(gw.url)
        await wait_for_credit(other.url)
        assert await login(s, gw.url) == 303
        token = await csrf(s, gw.url)
        form = {
            "csrf": token,
            "rate": "12.5",
            "max_active": "77",
            "pass_ttl_s": "300",
            "mode": "queue",
            "banner_en": "Class XII results are out",
            "banner_hi": "कक्षा 12 के परिणाम जारी",
        }
        changed_at = time.monotonic()
        code, _ = await post(s, gw.url, "/admin/settings", form)
        assert code == 303
        # The other node (its own view, its own refresh) shows it within a second.
        async with aiohttp.ClientSession() as probe:
            while True:
                async with probe.get(other.url + "/queue/state") as response:
                    state = await response.json()
                if state["banner"].get("en") == "Class XII results are out":
                    break
                assert time.monotonic() - changed_at < 1.0, state
                await asyncio.sleep(0.02)
        body = await live(s, gw.url)
        assert (body["rate"], body["max_active"], body["pass_ttl_s"]) == (12.5, 77, 300)
        async with s.get(gw.url + "/admin") as response:
            page = await response.text()
        # Audit: who (session tag, address), what, old and new values.
        for field, old, new in [("rate", "5", "12.5"), ("max_active", "1000", "77")]:
            row = rf"<td>{field}</td><td>{re.escape(old)}</td><td>{re.escape(new)}</td>"
            assert re.search(row, page), field
        assert "127.0.0.1" in page
        # The mode was sent unchanged: no entry for it.
        assert "<td>mode</td>" not in page


async def test_an_admin_chooses_the_paths_that_wait_in_line(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    keys = RoomKeys("results")
    async with gateway(**admin(rate=0.001)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        form = {"csrf": await csrf(s, gw.url), "protected_paths": "result"}
        code, page = await post(s, gw.url, "/admin/settings", form)
        assert code == 400 and "must start with /" in page
        assert await redis_client.hget(keys.config, "protected_paths") is None
        form = {"csrf": await csrf(s, gw.url), "protected_paths": "/result, /api/*"}
        assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
        assert await redis_client.hget(keys.config, "protected_paths") == b"/result,/api/*"
        entry = json.loads((await redis_client.lrange(keys.audit, 0, 0))[0])
        assert (entry["field"], entry["old"], entry["new"]) == (
            "protected_paths",
            "/*",
            "/result,/api/*",
        )
        await asyncio.sleep(0.6)  # the next refresh of the gateway's view
        async with student() as visitor:
            # The form page is no longer protected: straight to the backend, no place.
            async with visitor.get(gw.url + "/") as response:
                assert response.status == 200 and 'action="result?lang=' in await response.text()
            assert "wr_ticket" not in {c.key for c in visitor.cookie_jar}


async def test_the_audit_records_the_value_in_force_and_the_value_as_entered(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    keys = RoomKeys("results")
    async with gateway(**admin(rate=2.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        for rate in ("0.3", "2", "1e1"):
            form = {"csrf": await csrf(s, gw.url), "rate": rate}
            assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
        assert await redis_client.hget(keys.config, "rate") == b"10"
        assert (await post(s, gw.url, "/admin/pause", {"csrf": await csrf(s, gw.url)}))[0] == 303
        assert (await post(s, gw.url, "/admin/resume", {"csrf": await csrf(s, gw.url)}))[0] == 303
        entries = [json.loads(e) for e in reversed(await redis_client.lrange(keys.audit, 0, -1))]
        assert [(e["field"], e["old"], e["new"]) for e in entries] == [
            ("rate", "2", "0.3"),
            ("rate", "0.3", "2"),
            ("rate", "2", "10"),
            ("paused", "0", "1"),
            ("paused", "1", "0"),
        ]
        assert all("defaults" not in e for e in entries)
        async with s.get(gw.url + "/admin") as response:
            page = await response.text()
        assert "<td>rate</td><td>2</td><td>0.3</td>" in page
        assert "(default)" not in page


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"rate": "0"}, "Admission rate (people per second) must be between"),
        ({"rate": "-3"}, "must be between"),
        ({"rate": "abc"}, "must be a number; got &#39;abc&#39;"),
        ({"rate": "nan"}, "must be a number"),
        ({"max_active": "0"}, "Max active passes must be between 1"),
        ({"max_active": "2.5"}, "must be a whole number"),
        ({"mode": "party"}, "Mode must be one of"),
        ({"rate": "20", "pass_ttl_s": "3"}, "Pass lifetime (seconds) must be between 10"),
    ],
)
async def test_bad_values_give_a_form_error_and_change_nothing(
    gateway: GatewayFactory, redis_client: aioredis.Redis, form: dict[str, str], message: str
) -> None:
    async with gateway(**admin(rate=5.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        token = await csrf(s, gw.url)
        code, page = await post(s, gw.url, "/admin/settings", {"csrf": token, **form})
        assert code == 400
        assert "Nothing was changed" in page and message in page
        assert 'aria-invalid="true"' in page
        keys = RoomKeys("results")
        assert await redis_client.hgetall(keys.config) == {}
        assert await redis_client.llen(keys.audit) == 0
        assert (await live(s, gw.url))["rate"] == 5.0


async def test_every_admin_action_needs_the_csrf_token(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(**admin()) as gw, student() as s:
        assert await login(s, gw.url) == 303
        for path, form in [
            ("/admin/settings", {"rate": "99"}),
            ("/admin/pause", {}),
            ("/admin/release", {"cancel": "1"}),
            ("/admin/logout", {}),
        ]:
            for token in (None, "forged-token"):
                data = dict(form) if token is None else {**form, "csrf": token}
                code, page = await post(s, gw.url, path, data)
                assert code == 403, path
                assert "nothing was changed" in page
        assert await redis_client.hgetall(RoomKeys("results").config) == {}
        async with s.get(gw.url + "/admin") as response:
            assert response.status == 200  # still logged in: logout was refused too


async def test_pause_holds_the_line_and_resume_lets_it_move(gateway: GatewayFactory) -> None:
    async with gateway(**admin(rate=20.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        assert (await post(s, gw.url, "/admin/pause", {"csrf": await csrf(s, gw.url)}))[0] == 303
        waiting = [student() for _ in range(3)]
        try:
            for w in waiting:
                code, body = await join(w, gw.url)
                assert code == 202 and body["paused"] is True and body["eta_s"] is None
            frontier = (await live(s, gw.url))["frontier"]
            await asyncio.sleep(0.5)
            assert (await live(s, gw.url))["frontier"] == frontier
            token = await csrf(s, gw.url)
            assert (await post(s, gw.url, "/admin/resume", {"csrf": token}))[0] == 303
            deadline = time.monotonic() + 3
            while (await status(waiting[-1], gw.url))["state"] != "ready":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        finally:
            for w in waiting:
                await w.close()


async def test_queue_all_holds_even_an_idle_room_and_pass_through_skips_the_line(
    gateway: GatewayFactory,
) -> None:
    async with gateway(**admin(rate=50.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        token = await csrf(s, gw.url)
        form = {"csrf": token, "mode": "queue-all"}
        assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
        await asyncio.sleep(0.2)
        held = student()
        try:
            code, body = await join(held, gw.url)
            assert code == 202 and body["state"] == "waiting" and body["paused"] is True
            token = await csrf(s, gw.url)
            form = {"csrf": token, "mode": "pass-through"}
            assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
            await asyncio.sleep(0.2)
            # The kill switch lets the held student through as well.
            assert (await status(held, gw.url))["state"] == "ready"
        finally:
            await held.close()
        async with student() as free:
            async with free.post(gw.url + "/api/result", json=candidate_form(2)) as response:
                assert response.status == 200
                assert (await response.json())["roll"] == candidate_form(2)["roll"]
            assert TICKET_COOKIE not in {c.key for c in free.cookie_jar}


async def test_banner_and_pass_lifetime_apply_to_students(gateway: GatewayFactory) -> None:
    async with gateway(**admin(rate=0.2)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        # A pass issued 60 s ago is fine with the default lifetime (600 s)...
        old_pass = forge(TEST_KEYS, "waitroom.pass", ["results", "x", "e"], age_s=60)
        async with student() as admitted:
            admitted.cookie_jar.update_cookies({PASS_COOKIE: old_pass})
            async with admitted.post(gw.url + "/api/result", json=candidate_form(1)) as r:
                assert r.status == 200
        form = {"csrf": await csrf(s, gw.url), "pass_ttl_s": "30", "banner_hi": "सूचना"}
        form["banner_en"] = "Results for Class X are delayed by 10 minutes"
        assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
        await asyncio.sleep(0.2)
        # ...and expired once the admin shortens it to 30 s: back to the line.
        async with student() as admitted:
            admitted.cookie_jar.update_cookies({PASS_COOKIE: old_pass})
            async with admitted.post(
                gw.url + "/api/result", json=candidate_form(1), headers=JSON
            ) as r:
                assert r.status in (200, 202)
                assert (await r.json()).get("notice") == "pass_expired"
        async with student() as waiting:
            await join(waiting, gw.url)
            async with waiting.get(gw.url + "/") as response:
                page = await response.text()
            assert "Results for Class X are delayed by 10 minutes" in page
            async with waiting.get(gw.url + "/?lang=hi") as response:
                assert "सूचना" in await response.text()


async def test_a_scheduled_release_counts_down_then_draws_places(
    gateway: GatewayFactory,
) -> None:
    async with gateway(**admin(rate=50.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        release_at = time.time() + 2.0
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(release_at + 1))
        form = {"csrf": await csrf(s, gw.url), "release_at": when, "tz_offset": "0"}
        code, page = await post(s, gw.url, "/admin/release", form)
        assert code == 303, page
        info = (await live(s, gw.url))["release"]
        assert "seed" not in info and len(info["seed_sha256"]) == 64
        commitment = info["seed_sha256"]
        crowd = [student() for _ in range(8)]
        try:
            for w in crowd:
                code, body = await join(w, gw.url)
                assert code == 202 and body["state"] == "prequeue", body
                assert body["position"] is None and body["release_at_ms"] == info["at_ms"]
            async with crowd[0].get(gw.url + "/") as response:
                page = await response.text()
                assert "Results are not out yet" in page and 'id="countdown"' in page
            await asyncio.sleep(max(0.0, info["at_ms"] / 1000 - time.time()) + 0.5)
            places = sorted([(await status(w, gw.url))["position"] for w in crowd])
            assert places == list(range(1, 9))  # everyone got a place in the block
            info = (await live(s, gw.url))["release"]
            assert info["prequeue_to"] == 8
            # The seed is revealed and matches the commitment made before the release.
            async with s.get(gw.url + "/queue/state") as response:
                public = (await response.json())["release"]
            assert public["seed"] == info["seed"]
            assert hashlib.sha256(info["seed"].encode()).hexdigest() == commitment
        finally:
            for w in crowd:
                await w.close()


async def test_live_view_reports_backend_latency_and_line_figures(
    gateway: GatewayFactory,
) -> None:
    # One pass makes twenty lookups here: more than a student's limit.
    async with gateway(**admin(rate=50.0, pass_max_lookups=0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        async with student() as reader:
            await join(reader, gw.url)
            for k in range(20):
                async with reader.post(gw.url + "/api/result", json=candidate_form(k)) as r:
                    assert r.status == 200
        deadline = time.monotonic() + 5
        while True:
            body = await live(s, gw.url)
            if body.get("p95_ms") is not None and body["series"]:
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.3)
        assert 0 < body["p50_ms"] <= body["p95_ms"] < 2000
        assert body["error_rate"] == 0
        assert body["last_position"] >= 1 and body["frontier"] >= 1
        sample = body["series"][-1]
        assert sample["backend_per_s"] > 0 and sample["target_rate"] == 50.0
        # Only newer samples are sent again.
        async with s.get(gw.url + f"/admin/live.json?since={sample['t']}") as response:
            newer = (await response.json())["series"]
        assert all(x["t"] > sample["t"] for x in newer)
        async with student() as outsider:
            async with outsider.get(gw.url + "/admin/live.json") as response:
                assert response.status == 401


async def test_beyond_the_overall_failure_budget_every_login_is_slowed(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(**admin()) as gw, student() as s:
        # Many addresses guessing at once (a botnet) each stay under the per-address
        # lock-out; the overall count slows every attempt instead.
        await redis_client.set(RoomKeys("results").login_failures("*"), SLOW_AFTER, ex=600)
        started = time.monotonic()
        assert await login(s, gw.url, "guess") == 401
        assert time.monotonic() - started >= SLOW_DOWN_S
        assert (
            int(await redis_client.get(RoomKeys("results").login_failures("*"))) == SLOW_AFTER + 1
        )


async def test_target_ceiling_and_no_show_factor_agree_and_paused_is_on_every_tile(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    async with gateway(**admin(rate=4.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        # The governor measured that 5 in 8 admitted students come: admit 1.6x.
        queue = Queue(redis_client, make_settings("redis://unused").line())
        await queue.govern(None, 1.6, "62% of admitted students came", time.time())
        assert await login(s, gw.url) == 303
        deadline = time.monotonic() + 3
        while (body := await live(s, gw.url))["noshow_factor"] == 1.0:
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert (body["rate"], body["target_rate"], body["noshow_factor"]) == (4.0, 4.0, 1.6)
        assert body["admission_rate"] == pytest.approx(body["target_rate"] * 1.6)
        async with s.get(gw.url + "/admin") as response:
            page = await response.text()
        assert "ceiling" not in page  # admission runs above the admin's rate, by design
        assert re.search(r'data-k="target_rate">4\.0</span> / <span data-k="rate">4\.0<', page)
        assert re.search(r'data-k="noshow_factor">1\.6<', page)
        assert re.search(r'data-k="admission_rate">6\.4<', page)
        assert "paused" not in _tiles(page)
        assert (await post(s, gw.url, "/admin/pause", {"csrf": await csrf(s, gw.url)}))[0] == 303
        async with s.get(gw.url + "/admin") as response:
            tiles = re.findall(r"<div>(.*?)</div>", _tiles(await response.text()))
        assert len(tiles) >= 9
        assert all(">paused<" in t for t in tiles), tiles


def _tiles(page: str) -> str:
    start = page.index('<div class="tiles">')
    return page[start : page.index("<figure>", start)]


async def test_the_admin_switches_the_auto_rate_on_and_off_and_each_switch_is_audited(
    gateway: GatewayFactory, redis_client: aioredis.Redis
) -> None:
    keys = RoomKeys("results")
    async with gateway(**admin(rate=5.0)) as gw, student() as s:
        await wait_for_credit(gw.url)
        assert await login(s, gw.url) == 303
        assert (await live(s, gw.url))["rate_mode"] == "fixed"
        # Without the session's token nothing changes.
        code, _ = await post(s, gw.url, "/admin/settings", {"csrf": "forged", "rate_auto": "1"})
        assert code == 403 and await redis_client.hget(keys.config, "rate_auto") is None
        code, page = await post(
            s, gw.url, "/admin/settings", {"csrf": await csrf(s, gw.url), "rate_auto": "maybe"}
        )
        assert code == 400 and "Rate must be 0 (fixed) or 1 (auto" in page
        form = {"csrf": await csrf(s, gw.url), "rate_auto": "1", "rate": "400"}
        assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
        assert await redis_client.hget(keys.config, "rate_auto") == b"1"
        body = await live(s, gw.url)
        assert body["rate_auto"] is True and body["rate"] == 400.0
        assert body["rate_mode"] == "auto: searching for the backend's capacity"
        # With no backend traffic the search holds at its start (2 % of 400/s, 8/s).
        deadline = time.monotonic() + 5
        while (body := await live(s, gw.url))["target_rate"] != 8.0:
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.1)
        assert body["governor_reason"].startswith("auto: starting at 8/s")
        # What the search found, as any gateway's page shows it.
        found = Search(phase="hold", since=time.time(), capacity=38.4, per_admission=2.0)
        await Queue(redis_client, make_settings("redis://unused").line()).govern(
            16.3,
            None,
            "auto: found about 38 lookups/s; holding at 16.3/s",
            0,
            search=found,
        )
        deadline = time.monotonic() + 3
        while (body := await live(s, gw.url))["capacity"] != 38.4:
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        assert body["rate_mode"] == "auto: found about 38 lookups/s"
        async with s.get(gw.url + "/admin") as response:
            page = await response.text()
        assert 'data-k="rate_mode">auto: found about 38 lookups/s<' in page
        assert re.search(r'<option value="1" selected>Auto: find what the backend takes', page)
        form = {"csrf": await csrf(s, gw.url), "rate_auto": "0", "rate": "400"}
        assert (await post(s, gw.url, "/admin/settings", form))[0] == 303
        assert (await live(s, gw.url))["rate_mode"] == "fixed"
        entries = [json.loads(e) for e in reversed(await redis_client.lrange(keys.audit, 0, -1))]
        assert [(e["field"], e["old"], e["new"]) for e in entries] == [
            ("rate", "5", "400"),
            ("rate_auto", "0", "1"),
            ("rate_auto", "1", "0"),
        ]
