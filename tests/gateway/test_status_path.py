"""The lean layer's status check against the general code it short-cuts.

A waiting student's ``GET /status`` is answered from the view's per-refresh
``StatusBasis`` with a JSON template (``estimate.status_reply``), the ticket cookie
found without splitting the header (``lean.cookie_values``) and the ticket remembered
once verified (``TicketSigner.read_ticket``). Each must give exactly what the
general code gives: ``standing`` + ``json.dumps``, splitting the cookie header, and
judging every ticket in full.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support import e2e
from tests.support.gateway_support import TEST_KEYS, make_settings
from waitroom.gateway.lean import Lean, cookie, cookie_values
from waitroom.gateway.responses import CookiePolicy
from waitroom.gateway.services import make_signer
from waitroom.gateway.services import make_view as view_of
from waitroom.line.state import RoomState, Search
from waitroom.room import door as door_module
from waitroom.room import estimate as estimate_module
from waitroom.room.door import Door
from waitroom.room.estimate import (
    CLIMBING_POLL_MAX_S,
    POLL_MAX_S,
    standing,
    standing_from_basis,
    status_reply,
)
from waitroom.room.snapshot import RoomView
from waitroom.room.tickets import CLOCK_SKEW_S, TICKET_COOKIE, Ticket, TicketRejected, TicketSigner
from waitroom.shared.paths import EVERYTHING, RESULT_ROUTES, parse_rule
from waitroom.shared.rawasgi import Message, Scope

EPOCH = "e1"
SETTINGS = make_settings("redis://127.0.0.1:1/0")


def room_state(**changes: Any) -> RoomState:
    values: dict[str, Any] = {
        "seq": 1000,
        "frontier": 100,
        "epoch": EPOCH,
        "admitted": 100,
        "active": 10,
        "rate": 5.0,
        "max_active": 500,
        "paused": False,
        "mode": "queue",
    }
    values.update(changes)
    return RoomState(**values)


def make_view(
    state: RoomState | None, *, healthy: bool = True, rate: float | None = None
) -> RoomView:
    view = view_of(cast(Any, None), SETTINGS)  # never refreshed: no Redis here
    if state is not None:
        view._observe(state)
        if rate is not None:
            view._rate = rate  # as the rate measured over the last half minute
    view.healthy = healthy
    return view


def ticket_at(position: int) -> Ticket:
    return Ticket("results", position, int(time.time()), "abc", EPOCH, 0)


def reference(position: int, view: RoomView, seed: int) -> tuple[bool, int, bytes]:
    random.seed(seed)
    now = standing(ticket_at(position), view)
    body = json.dumps(now.as_json(), separators=(",", ":")).encode()
    return now.ready, now.retry_after_s, body


def fast(position: int, view: RoomView, seed: int) -> tuple[bool, int, bytes] | None:
    basis = view.status_basis()
    assert basis is not None
    random.seed(seed)
    return status_reply(position, basis)


# -- status_reply is standing + json.dumps ------------------------------------------

states = st.builds(
    room_state,
    seq=st.integers(0, 10**7),
    frontier=st.integers(0, 10**7),
    admitted=st.integers(0, 10**7),
    rate=st.floats(0.01, 10_000),
    max_active=st.integers(1, 100_000),
    paused=st.sampled_from([False, False, False, True]),
    mode=st.sampled_from(["queue", "queue", "queue", "queue-all", "pass-through"]),
    release_at_ms=st.sampled_from([None, None, 1_900_000_000_000]),
    release_base=st.integers(0, 1000),
    released_n=st.none() | st.integers(0, 5000),
    release_seed=st.just("seed"),
    effective_rate=st.none() | st.floats(0.01, 100),
    noshow_factor=st.floats(1.0, 3.0),
    # The auto rate's climb shortens the longest poll (view.CLIMBING_POLL_MAX_S).
    rate_auto=st.booleans(),
    search=st.builds(Search, phase=st.sampled_from(["", "climb", "drain", "hold"])),
)
rates = st.none() | st.just(0.0) | st.floats(1e-6, 1e6)


# Every line a view can see, and a ticket anywhere in it.
status_cases = given(
    state=states,
    # Mostly behind the frontier, some at or before it, some far beyond.
    offset=st.integers(-50, 5000) | st.integers(-(10**7), 10**9),
    healthy=st.booleans(),
    rate=rates,
    seed=st.integers(0, 2**32),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@status_cases
@example(state=room_state(), offset=10**18, healthy=True, rate=None, seed=1)  # huge
@example(state=room_state(), offset=1, healthy=True, rate=0.0, seed=2)  # eta None
@example(state=room_state(paused=True), offset=4900, healthy=True, rate=None, seed=3)
@example(state=room_state(), offset=4900, healthy=False, rate=None, seed=4)  # stale
@example(state=room_state(), offset=-100, healthy=True, rate=None, seed=5)  # place 0
@example(state=room_state(), offset=0, healthy=False, rate=None, seed=6)  # ready
@example(state=room_state(), offset=1, healthy=True, rate=1e-300, seed=7)  # overflow
def test_status_reply_is_standing_as_json(
    state: RoomState, offset: int, healthy: bool, rate: float | None, seed: int
) -> None:
    if state.released_n is not None and state.released_n < state.release_base:
        state = replace(state, released_n=state.release_base)
    position = max(0, state.frontier + offset)
    view = make_view(state, healthy=healthy, rate=rate)
    try:
        expected = reference(position, view, seed)
    except OverflowError:  # an estimate past any float: both fail alike (a calm 503)
        with pytest.raises(OverflowError):
            fast(position, view, seed)
        return
    got = fast(position, view, seed)
    if got is None:  # left to standing: only the pass-through mode and the pre-queue
        assert state.mode == "pass-through" or (
            state.release_at_ms is not None
            and state.released_n is None
            and position > state.release_base
        )
        return
    assert got == expected
    assert json.loads(got[2]) == json.loads(expected[2])


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@status_cases
@example(state=room_state(paused=True), offset=4900, healthy=True, rate=None, seed=3)
@example(state=room_state(), offset=0, healthy=False, rate=None, seed=6)  # ready
def test_standing_from_the_basis_is_standing(
    state: RoomState, offset: int, healthy: bool, rate: float | None, seed: int
) -> None:
    """The waiting page's refresh works from the view's basis (``standing_from_basis``):
    the same Standing as ``standing``, wherever the basis answers at all."""
    view = make_view(state, healthy=healthy, rate=rate)
    basis = view.status_basis()
    assert basis is not None
    ticket = ticket_at(max(0, state.frontier + offset))
    random.seed(seed)
    fast_now = standing_from_basis(ticket, basis)
    random.seed(seed)
    full = standing(ticket, view)
    if fast_now is not None:
        assert fast_now == full
    else:  # only where status_reply also leaves it to standing
        random.seed(seed)
        assert status_reply(ticket.position, basis) is None


@pytest.mark.parametrize("rate", [0.05, 1 / 3, 0.7, 2.5, 7.0, 13.37, 50.0, 333.3])
@pytest.mark.parametrize("healthy", [True, False])
def test_status_reply_is_standing_as_json_near_the_front(rate: float, healthy: bool) -> None:
    # Every place of the first thousands, where rounding of the estimate and of the
    # poll interval changes most often.
    view = make_view(room_state(frontier=100), healthy=healthy, rate=rate)
    for position in range(90, 3100):
        assert fast(position, view, position) == reference(position, view, position)


def test_the_basis_follows_the_view() -> None:
    view = make_view(room_state())
    first = fast(5000, view, 1)
    assert first is not None and b'"reconnecting":false' in first[2]
    view.healthy = False  # however it is set: refresh, the refresh loop, a test
    stale = fast(5000, view, 1)
    assert stale is not None and b'"reconnecting":true' in stale[2]
    assert stale == reference(5000, view, 1)
    view._observe(room_state(frontier=6000))  # a refresh: the line moved past them
    ready = fast(5000, view, 1)
    assert ready is not None and ready[0] and b'"reconnecting":false' in ready[2]
    assert ready == reference(5000, view, 1)


# -- cookie is splitting the header -------------------------------------------------


def all_by_splitting(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    found = []
    for key, value in headers:
        if key == b"cookie":
            for part in value.split(b";"):
                cname, _, cvalue = part.strip().partition(b"=")
                if cname == name:
                    found.append(cvalue.decode("latin-1"))
    return found


def cookie_by_splitting(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    found = all_by_splitting(headers, name)
    return found[0] if found else None


NAME = TICKET_COOKIE.encode()
pieces = st.sampled_from(
    [b"wr_ticket", b"wr_ticket=", b"=", b";", b" ", b"\t", b"\x0b", b"a", b"x_wr_ticket", b"wr"]
)
cookie_texts = st.lists(pieces | st.binary(max_size=6), max_size=12).map(b"".join)
header_lists = st.lists(
    st.tuples(st.sampled_from([b"cookie", b"accept", b"cookies"]), cookie_texts), max_size=4
)


@settings(max_examples=2000, deadline=None)
@given(headers=header_lists)
@example(headers=[(b"cookie", b"a=1; wr_ticket=abc.def ; b=2")])
@example(headers=[(b"cookie", b"x=wr_ticket=no; wr_ticket=yes")])
@example(headers=[(b"cookie", b"wr_ticket =no;\twr_ticket= yes  ")])
@example(headers=[(b"cookie", b"a=1"), (b"cookie", b"wr_ticket=second")])
def test_cookie_finds_what_splitting_finds(headers: list[tuple[bytes, bytes]]) -> None:
    assert cookie(headers, NAME) == cookie_by_splitting(headers, NAME)
    assert cookie(headers, b"a") == cookie_by_splitting(headers, b"a")


@settings(max_examples=1000, deadline=None)
@given(headers=header_lists, limit=st.integers(1, 5))
@example(headers=[(b"cookie", b"wr_ticket=junk; wr_ticket=good")], limit=4)
def test_cookie_values_are_what_splitting_finds_up_to_the_limit(
    headers: list[tuple[bytes, bytes]], limit: int
) -> None:
    assert cookie_values(headers, NAME, limit) == all_by_splitting(headers, NAME)[:limit]


# -- a remembered ticket is judged on every use -------------------------------------


def forge(payload: Any, age_s: int = 0) -> str:
    return e2e.forge(TEST_KEYS, "waitroom.ticket", payload, age_s)


def reasons(signer: TicketSigner, token: str, epoch: str | None) -> str:
    try:
        signer.read_ticket(token, epoch)
    except TicketRejected as exc:
        return exc.reason
    return "ok"


def test_a_remembered_ticket_is_judged_on_every_use(monkeypatch: pytest.MonkeyPatch) -> None:
    signer = make_signer(SETTINGS)
    _, token = signer.issue_ticket(7, EPOCH, 3)
    first = signer.read_ticket(token, EPOCH)
    assert signer.read_ticket(token, EPOCH) is first  # remembered, not made again
    assert (first.position, first.epoch, first.joined_frontier) == (7, EPOCH, 3)
    assert reasons(signer, token, "another-line") == "foreign"
    assert reasons(signer, token, None) == "ok"
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + SETTINGS.ticket_ttl_s + 5)
    assert reasons(signer, token, EPOCH) == "expired"
    monkeypatch.setattr(time, "time", lambda: now - CLOCK_SKEW_S - 5)
    assert reasons(signer, token, EPOCH) == "tampered"  # signed in the future
    monkeypatch.setattr(time, "time", lambda: now)
    assert reasons(signer, token, EPOCH) == "ok"


@pytest.mark.parametrize(
    ("payload", "age_s", "reason"),
    [
        (["results", "x", "id", EPOCH, 0], 0, "garbled"),
        (["results", 1, "id"], 0, "garbled"),
        (["results", "x", "id", EPOCH, 0], 13 * 3600, "expired"),  # expiry first
        (["elsewhere", 1, "id", EPOCH, 0], 0, "foreign"),
        (["elsewhere", 1, "id", EPOCH, 0], 13 * 3600, "expired"),
        (["results", 1, "id", "old-line", 0], 0, "foreign"),
        (["results", 1, "id", EPOCH, 0], 0, "ok"),
    ],
)
def test_every_reason_holds_on_every_use(payload: Any, age_s: int, reason: str) -> None:
    signer = make_signer(SETTINGS)
    token = forge(payload, age_s)
    assert [reasons(signer, token, EPOCH) for _ in range(3)] == [reason] * 3


# -- the lean layer answers, falls through, fails calmly -----------------------------


class Recorder:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.quart_calls = 0

    async def app(self, scope: Scope, receive: Any, send: Any) -> None:
        self.quart_calls += 1

    async def send(self, message: Message) -> None:
        self.messages.append(message)


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def status_scope(token: str | None, method: str = "GET") -> Scope:
    headers = [(b"host", b"x"), (b"accept", b"application/json")]
    if token is not None:
        headers.append((b"cookie", b"lang=en; " + f"{TICKET_COOKIE}={token}".encode()))
    return {"type": "http", "method": method, "path": "/status", "headers": headers}


def door_for(view: RoomView, signer: TicketSigner) -> Door:
    # No Redis here: the status check never asks it (a join would fail loudly).
    none = cast(Any, None)
    return Door(view, signer, none, none, none, join_limit=0, lookups=parse_rule(RESULT_ROUTES))


def lean(view: RoomView, signer: TicketSigner) -> tuple[Lean, Recorder]:
    recorder = Recorder()
    none = cast(Any, None)
    layer = Lean(
        recorder.app,
        door_for(view, signer),
        none,
        view,
        none,
        none,
        cookies=CookiePolicy(False),
        body_timeout_s=10.0,
        protected_paths=EVERYTHING,
        max_body_bytes=1 << 20,
        pass_ttl_s=lambda: 600,
    )
    return layer, recorder


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    ("state", "position"),
    [
        (room_state(), 500),  # waiting
        (room_state(), 50),  # ready
        (room_state(paused=True), 500),  # paused: no estimate
        (room_state(mode="pass-through"), 500),  # left to standing
        (room_state(release_at_ms=1_900_000_000_000, release_base=100), 500),  # pre-queue
    ],
)
async def test_the_lean_layer_answers_as_standing_does(
    state: RoomState, position: int, method: str
) -> None:
    view = make_view(state)
    signer = make_signer(SETTINGS)
    ticket, token = signer.issue_ticket(position, EPOCH, 0)
    layer, recorder = lean(view, signer)
    random.seed(42)
    await layer(status_scope(token, method), _receive, recorder.send)
    random.seed(42)
    now = standing(ticket, view)
    body = json.dumps(now.as_json(), separators=(",", ":")).encode()
    start, sent = recorder.messages
    assert recorder.quart_calls == 0
    assert start["status"] == (200 if now.ready else 202)
    assert start["headers"] == [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"cache-control", b"no-store"),
        (b"retry-after", str(now.retry_after_s).encode()),
    ]
    assert sent == {"type": "http.response.body", "body": b"" if method == "HEAD" else body}


def test_the_door_decides_what_the_status_check_cannot() -> None:
    signer = make_signer(SETTINGS)
    _, token = signer.issue_ticket(500, EPOCH, 0)
    for view, tokens in [
        (make_view(None), [token]),  # no state yet
        (make_view(room_state()), []),  # no ticket
        (make_view(room_state()), ["garbage"]),  # a bad one
        (make_view(room_state(epoch="new-line")), [token]),  # an old line's
    ]:
        assert door_for(view, signer).status(tokens) is None
    # A garbled copy sent before a valid ticket does not cost the student's place.
    view = make_view(room_state())
    reply = door_for(view, signer).status(["garbage", token])
    assert reply is not None and b'"position":500' in reply[2]


async def test_a_failing_status_check_is_answered_calmly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    signer = make_signer(SETTINGS)
    _, token = signer.issue_ticket(500, EPOCH, 0)
    layer, recorder = lean(make_view(room_state()), signer)

    def broken(*args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(door_module, "status_reply", broken)
    with caplog.at_level(logging.ERROR, logger="waitroom.gateway.lean"):
        await layer(status_scope(token), _receive, recorder.send)
    start, _ = recorder.messages
    assert start["status"] == 503 and (b"retry-after", b"5") in start["headers"]
    assert "lean layer failed on GET /status" in caplog.text

    # A send that fails (the client left) is logged, and nothing more is sent.
    monkeypatch.setattr(door_module, "status_reply", estimate_module.status_reply)
    sent: list[Message] = []

    async def gone(message: Message) -> None:
        sent.append(message)
        raise OSError("client gone")

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="waitroom.gateway.lean"):
        await layer(status_scope(token), _receive, gone)
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert "lean layer failed" in caplog.text


def test_while_the_auto_rate_climbs_no_poll_waits_past_the_climbing_cap() -> None:
    far = 10**6  # a minute's wait and more at any rate here
    for search, most in ((Search(phase="climb"), CLIMBING_POLL_MAX_S), (Search(), POLL_MAX_S)):
        view = make_view(room_state(rate_auto=True, search=search, rate=5.0))
        if search.phase == "":
            view = make_view(room_state(rate_auto=False, rate=5.0))
        assert view.poll_interval(far) == most
        assert json.loads(view.state_body)["poll_max_s"] == most
        got = fast(100 + far, view, 1)
        assert got is not None and json.loads(got[2])["retry_after_s"] <= 1.2 * most
    # Once the search holds, polls go back to a minute's wait.
    held = make_view(room_state(rate_auto=True, search=Search(phase="hold"), rate=5.0))
    assert held.poll_interval(far) == POLL_MAX_S
