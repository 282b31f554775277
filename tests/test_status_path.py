"""The gateway's shortcuts on a waiting student's status check, against the general
code they short-cut: a ticket remembered once verified (``TicketSigner.read_ticket``)
must be judged as if read in full, every time.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests import e2e
from tests.gateway_support import TEST_KEYS, make_settings
from waitroom.tickets import CLOCK_SKEW_S, TicketRejected, TicketSigner

EPOCH = "e1"
SETTINGS = make_settings("redis://127.0.0.1:1/0")


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
