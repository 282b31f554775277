"""The door: one decision for every state a student's request can be in.

Against a real Redis: the door's joins, trades and lookup counts are script calls,
coalesced per moment, and the decisions are read back from what Redis holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from tests.support.e2e import forge
from tests.support.gateway_support import TEST_KEYS, make_settings
from waitroom.gateway.pages import minutes
from waitroom.gateway.replies import Replies
from waitroom.gateway.responses import CookiePolicy
from waitroom.gateway.services import Services
from waitroom.line.keys import RoomKeys
from waitroom.room.door import (
    Admitted,
    Forward,
    JoinLimited,
    LookupLimited,
    NoPlace,
    Unavailable,
    Visit,
    Waiting,
)

KEYS = RoomKeys("results")


@contextlib.asynccontextmanager
async def door_services(redis_url: str, **overrides: Any) -> AsyncIterator[Services]:
    services = Services.build(make_settings(redis_url, **overrides))
    await services.view.refresh()  # creates the line in an empty Redis
    try:
        yield services
    finally:
        await services.redis.aclose()


async def front_at(services: Services, redis_sync: redis.Redis, frontier: int) -> None:
    """Move the frontier as the pacer would have, and let the view see it."""
    seq = max(frontier, int(redis_sync.hget(KEYS.state, "seq") or 0))
    redis_sync.hset(KEYS.state, mapping={"frontier": frontier, "seq": seq})
    await services.view.refresh()


def visit(method: str = "GET", path: str = "/", **kw: Any) -> Visit:
    return Visit(method, path, **kw)


async def test_a_new_arrival_gets_the_next_place_and_a_ticket(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        first = await s.door.decide(visit())
        second = await s.door.decide(visit(as_json=True))
        assert isinstance(first, Waiting) and isinstance(second, Waiting)
        assert (first.ticket.position, second.ticket.position) == (1, 2)
        assert first.issued and second.issued and first.notice is None
        # The student comes back with the ticket: the same place, nothing new issued.
        again = await s.door.decide(visit(tickets=[first.issued]))
        assert isinstance(again, Waiting) and again.issued is None
        assert again.ticket.position == 1
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 2


async def test_head_never_takes_a_place_nor_trades_a_ticket(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        assert await s.door.decide(visit("HEAD")) == NoPlace()
        assert await s.door.decide(visit("HEAD", "/status", as_json=True)) == NoPlace()
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 0
        joined = await s.door.decide(visit())
        assert isinstance(joined, Waiting) and joined.issued
        await front_at(s, redis_sync, 1)
        head = await s.door.decide(visit("HEAD", tickets=[joined.issued]))
        assert isinstance(head, Waiting) and head.standing.ready
        assert not redis_sync.exists(KEYS.spent(joined.ticket.id))  # still tradeable


async def test_a_ticket_at_the_front_is_traded_once(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        a = await s.door.decide(visit())
        b = await s.door.decide(visit(as_json=True))
        assert isinstance(a, Waiting) and isinstance(b, Waiting)
        assert a.issued and b.issued
        await front_at(s, redis_sync, 2)
        browser = await s.door.decide(visit(tickets=[a.issued]))
        assert isinstance(browser, Forward) and browser.issued
        assert browser.admission is not None and browser.admission.id == a.ticket.id
        # A status check at the front only says "ready"; the app's own request
        # trades the ticket and goes on, counted as a lookup.
        ready = await s.door.decide(visit(path="/status", tickets=[b.issued], as_json=True))
        assert isinstance(ready, Waiting) and ready.standing.ready and ready.issued is None
        app = await s.door.decide(visit("POST", "/api/result", tickets=[b.issued], as_json=True))
        assert isinstance(app, Forward) and app.issued and app.verdict is not None
        # A copy of a traded ticket buys no second pass: a new place, and why.
        copy = await s.door.decide(visit(tickets=[a.issued]))
        assert isinstance(copy, Waiting) and copy.notice == "rejected_spent"
        assert copy.issued and copy.ticket.position == 3
        assert int(redis_sync.hget(KEYS.state, "shown") or 0) == 2


async def test_a_pass_forwards_counts_lookups_and_stops_at_the_limit(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url, pass_max_lookups=2) as s:
        _, token = s.signer.issue_pass("t1", "e")
        asked = await s.door.decide(visit(path="/status", pass_token=token, as_json=True))
        assert asked == Admitted()
        page = await s.door.decide(visit(pass_token=token))
        assert isinstance(page, Forward) and page.verdict is None  # not a lookup path
        # A JSON app's own request is forwarded like any other once admitted.
        app = await s.door.decide(visit(pass_token=token, as_json=True))
        assert isinstance(app, Forward) and app.verdict is None
        for used in (1, 2):
            lookup = await s.door.decide(visit("POST", "/api/result", pass_token=token))
            assert isinstance(lookup, Forward) and lookup.verdict is not None
            assert lookup.verdict.used == used and lookup.verdict.counted
        limited = await s.door.decide(visit("POST", "/result", pass_token=token))
        assert limited == LookupLimited(2)
        # A lookup the backend could not make is given back.
        await s.door.settle(lookup, 503)
        assert int(redis_sync.get(KEYS.lookups("t1")) or 0) == 2  # 3 counted, 1 back


async def test_an_expired_pass_and_bad_tickets_go_to_the_back_saying_why(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        joined = await s.door.decide(visit())
        assert isinstance(joined, Waiting) and joined.issued
        old = forge(TEST_KEYS, "waitroom.pass", ["results", "t1", "e"], age_s=3600)
        expired = await s.door.decide(visit(pass_token=old))
        assert isinstance(expired, Waiting) and expired.notice == "pass_expired"
        assert expired.ticket.position == 2
        # A garbled copy before a valid ticket: the valid one wins, no notice.
        kept = await s.door.decide(visit(tickets=["garbage", joined.issued]))
        assert isinstance(kept, Waiting) and kept.issued is None and kept.notice is None
        assert kept.ticket.position == 1
        # Only garbage: a new place, and the first reason.
        lost = await s.door.decide(visit(tickets=["garbage", "more"]))
        assert isinstance(lost, Waiting) and lost.notice == "rejected_garbled"
        assert lost.ticket.position == 3


async def test_the_pass_through_mode_forwards_without_a_line(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        redis_sync.hset(KEYS.config, "mode", "pass-through")
        await s.view.refresh()
        assert await s.door.decide(visit()) == Forward(None)
        assert await s.door.decide(visit(as_json=True)) == Forward(None)
        assert await s.door.decide(visit(path="/status", as_json=True)) == Admitted()
        assert await s.door.decide(visit("POST", "/api/result")) == Forward(None)
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 0


async def test_join_limits_per_client_and_a_lower_one_for_the_pre_queue(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url, join_limit=3, join_window_s=60, prequeue_join_limit=1) as s:
        here = ("203.0.113.7", 5000)
        for _ in range(3):
            assert isinstance(await s.door.decide(visit(peer=here)), Waiting)
        refused = await s.door.decide(visit(peer=here))
        assert isinstance(refused, JoinLimited) and 1 <= refused.wait_s <= 60
        # Before a scheduled release, one place per client, until the release.
        release_at = int(time.time() * 1000) + 600_000
        redis_sync.hset(KEYS.config, "release_at", release_at)
        await s.view.refresh()
        other = ("203.0.113.8", 5000)
        assert isinstance(await s.door.decide(visit(peer=other)), Waiting)
        held = await s.door.decide(visit(peer=other))
        assert isinstance(held, JoinLimited) and held.wait_s > 600
        assert int(redis_sync.hget(KEYS.state, "seq") or 0) == 4


async def test_without_redis_a_new_arrival_is_asked_to_come_back(redis_sync: Any) -> None:
    services = Services.build(make_settings("redis://127.0.0.1:1/0"))
    try:
        decision = await services.door.decide(visit())
        assert isinstance(decision, Unavailable) and decision.retry_s > 0
    finally:
        await services.redis.aclose()


async def test_arrivals_of_a_moment_share_one_script_call_in_arrival_order(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        decisions = await asyncio.gather(*(s.door.decide(visit()) for _ in range(2000)))
        positions = [d.ticket.position for d in decisions if isinstance(d, Waiting)]
        assert positions == list(range(1, 2001))  # gap-free, in the order of arrival
        assert s.door.joins.calls == 2000
        assert s.door.joins.batches <= 8, s.door.joins.batches
        # What /metrics reports of it, once flushed to the room's counters.
        await s.stats.flush(s.redis, s.queue.keys)
        counters = redis_sync.hgetall(KEYS.metrics)
        assert int(counters[b"redis_batched:join"]) == 2000
        assert int(counters[b"redis_batches:join"]) == s.door.joins.batches


async def test_an_idle_room_admits_a_prefix_of_a_block_at_once(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        redis_sync.hset(KEYS.state, "credit", 3)
        decisions = await asyncio.gather(*(s.door.decide(visit(as_json=True)) for _ in range(5)))
        kinds = [type(d).__name__ for d in decisions]
        # The three credits go to the first three places, in order (their requests
        # go on to the origin); the rest wait.
        assert kinds == ["Forward", "Forward", "Forward", "Waiting", "Waiting"]
        assert redis_sync.hget(KEYS.state, "frontier") == b"3"


# -- the status check and the decision agree ------------------------------------------


@pytest.mark.parametrize("seed", range(40))
async def test_the_status_check_says_what_the_decision_says(
    redis_url: str, redis_sync: redis.Redis, seed: int
) -> None:
    """The status check's fast copy (``Door.status``) against ``decide`` + the JSON
    reply, over random lines, places and health."""
    rng = random.Random(seed)
    async with door_services(redis_url, rate=rng.uniform(0.1, 500)) as s:
        frontier = rng.randint(0, 10_000)
        redis_sync.hset(
            KEYS.state, mapping={"frontier": frontier, "seq": frontier + rng.randint(0, 10**6)}
        )
        if rng.random() < 0.2:
            redis_sync.hset(KEYS.config, "paused", "1")
        await s.view.refresh()
        s.view.healthy = rng.random() < 0.8
        epoch = s.view.state.epoch if s.view.state else ""
        position = max(1, frontier + rng.randint(-50, 50_000))
        _, token = s.signer.issue_ticket(position, epoch, 0)
        random.seed(seed)
        fast = s.door.status([token])
        random.seed(seed)
        decided = await s.door.decide(visit("GET", "/status", tickets=[token], as_json=True))
        assert fast is not None and isinstance(decided, Waiting)
        replies = _replies(s)
        answer = replies.to(decided, visit("GET", "/status", tickets=[token], as_json=True), "en")
        assert fast[0] == decided.standing.ready
        assert fast[1] == decided.standing.retry_after_s
        assert fast[2] == answer.body
        assert answer.status == (200 if fast[0] else 202)
        if not fast[0]:
            # A JSON app polling / while it waits is answered by the same fast copy.
            random.seed(seed)
            root = visit("GET", "/", tickets=[token], as_json=True)
            waiting = await s.door.decide(root)
            assert isinstance(waiting, Waiting)
            assert replies.to(waiting, root, "en").body == fast[2]


def _replies(s: Services) -> Replies:
    return Replies(
        s.pages,
        CookiePolicy(False),
        waiting_status=200,
        ticket_ttl_s=3600,
        pass_ttl_s=s.view.pass_ttl_s,
    )


# -- the page's estimate ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("low_s", "high_s", "shown"),
    [
        (0, 70, (1, 2)),
        (30, 119, (1, 2)),
        (61, 61, (1, 2)),
        (150, 400, (2, 7)),
        (600, 600, (10, 11)),
    ],
)
def test_an_estimate_never_reads_zero_minutes_and_is_always_a_range(
    low_s: int, high_s: int, shown: tuple[int, int]
) -> None:
    assert minutes(low_s, high_s) == shown


async def test_without_javascript_times_are_in_the_boards_zone(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url, time_zone="Asia/Kolkata") as s:
        joined = await s.door.decide(visit())
        assert isinstance(joined, Waiting)
        page = s.pages.waiting(joined.ticket, joined.standing, None, "en").decode()
        assert " IST</time>" in page
        assert "0–" not in page.split('id="eta">')[1].split("<")[0]


async def test_the_admins_banner_is_escaped_once_on_every_page(
    redis_url: str, redis_sync: redis.Redis
) -> None:
    async with door_services(redis_url) as s:
        redis_sync.hset(KEYS.config, "banner_en", "Results <b>& more</b>")
        await s.view.refresh()
        joined = await s.door.decide(visit())
        assert isinstance(joined, Waiting)
        compiled = s.pages.waiting(joined.ticket, joined.standing, None, "en").decode()
        calm = s.pages.message("title_unavailable", "unavailable", "en", retry_s=5).decode()
        full = s.pages.busy("en", 5, {"roll": "1"}, "/result").decode()
        for page in (compiled, calm, full):
            assert "Results &lt;b&gt;&amp; more&lt;/b&gt;</p>" in page
            assert 'id="banner" class="note banner" role="status">' in page  # shown
