"""The door: past its limit, a worker turns new arrivals away calmly, at once."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.e2e import JSON, GatewayFactory, student, wait_for_credit
from waitroom.tickets import TICKET_COOKIE


async def test_past_the_limit_new_arrivals_get_a_calm_retry_page_at_once(
    gateway: GatewayFactory,
) -> None:
    async with gateway(rate=0.1, door_max_pending=2) as gw:
        await wait_for_credit(gw.url)
        sessions = [student() for _ in range(60)]
        try:

            async def arrive(s: aiohttp.ClientSession, as_json: bool) -> tuple[int, str, str]:
                headers = JSON if as_json else {}
                async with s.get(gw.url + "/", headers=headers) as r:
                    return r.status, r.headers.get("Retry-After", ""), await r.text()

            answers = await asyncio.gather(*(arrive(s, i % 4 == 0) for i, s in enumerate(sessions)))
            codes = [code for code, _, _ in answers]
            assert set(codes) <= {200, 202, 503}, codes
            turned = [(retry, body) for code, retry, body in answers if code == 503]
            assert turned, "60 simultaneous arrivals never passed a limit of 2"
            assert len(turned) < len(answers)  # and some got their place
            for retry, body in turned:
                assert 5 <= int(retry) <= 15
                assert "tries again by itself" in body or '"retry_after_s"' in body
            # Turned away means no place was given: no ticket, nothing to lose.
            for s, (code, _, _) in zip(sessions, answers, strict=True):
                has_ticket = TICKET_COOKIE in {c.key for c in s.cookie_jar}
                assert has_ticket == (code != 503)
            # Once the rush is over the same students get in.
            for s, (code, _, _) in zip(sessions, answers, strict=True):
                if code == 503:
                    async with s.get(gw.url + "/", headers=JSON) as r:
                        assert r.status == 202
                    break
            await asyncio.sleep(0.8)  # the counters reach Redis twice a second
            async with sessions[0].get(gw.url + "/metrics") as r:
                assert 'waitroom_turned_away_total{where="door"}' in await r.text()
        finally:
            for s in sessions:
                await s.close()
