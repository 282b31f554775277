"""The gateway's shortcuts on a waiting student's status check, against the general
code they short-cut: the ticket cookie found without splitting the header
(``fastpath.cookie``), and a ticket remembered once verified
(``TicketSigner.read_ticket``), which must be judged as if read in full, every time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests import e2e
from tests.gateway_support import TEST_KEYS, make_settings
from waitroom.fastpath import cookie
from waitroom.tickets import CLOCK_SKEW_S, TICKET_COOKIE, TicketRejected, TicketSigner

EPOCH = "e1"
SETTINGS = make_settings("redis://127.0.0.1:1/0")


# -- cookie is splitting the header -------------------------------------------------


def cookie_by_splitting(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == b"cookie":
            for part in value.split(b";"):
                cname, _, cvalue = part.strip().partition(b"=")
                if cname == name:
                    return cvalue.decode("latin-1")
    return None


NAME = TICKET_COOKIE.encode()
pieces = st.sampled_from(
    [b"wr_ticket", b"wr_ticket=", b"=", b";", b" ", b"\t", b"\x0b", b"a", b"x_wr_ticket", b"wr"]
)
cookie_values = st.lists(pieces | st.binary(max_size=6), max_size=12).map(b"".join)
header_lists = st.lists(
    st.tuples(st.sampled_from([b"cookie", b"accept", b"cookies"]), cookie_values), max_size=4
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
    signer = TicketSigner(SETTINGS)
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
    signer = TicketSigner(SETTINGS)
    token = forge(payload, age_s)
    assert [reasons(signer, token, EPOCH) for _ in range(3)] == [reason] * 3
