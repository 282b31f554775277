"""Where a student with a ticket stands: before the release, waiting, or ready.

Computed from the signed ticket and the worker's cached view alone, so the lean
ASGI layer and the Quart pages give the same answer without a Redis round trip.
A ticket holds the position its owner was given on arrival; their *place* is the
same number, except for the pre-queue of a scheduled release, whose positions are
put in a random order at the release time (``waitroom.line.release``).

The wait estimate and the poll interval are worked out here and nowhere else
(``wait_estimate``, ``poll_interval``; the view only hands them its numbers). The
status check's ``_numbers`` is their deliberate fast copy, inlined for the crowd's
commonest request; tests/gateway/test_status_path.py holds it to ``standing``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from waitroom.line import release
from waitroom.line.state import RoomState
from waitroom.room.tickets import Ticket

if TYPE_CHECKING:  # the view gives this module its inputs; it imports what is here
    from waitroom.room.snapshot import RoomView

# A poll far from the front waits a quarter of the wait at today's rate, so a rate up
# to four times faster still finds the student in time, and at most a minute. While
# the auto rate climbs (x1.5 a step, about twenty times its start within a minute) a
# minute's sleep misses the admission by half a minute: the seed's polling delay was
# p90 9.6 s, p99 23 s, and the origin's load trailed admission by as much, which
# the search misread. Then polls wait at most CLIMBING_POLL_MAX_S, in which a climb
# raises the rate by less than four times (pinned in tests/test_governor.py).
POLL_MAX_S = 60.0
CLIMBING_POLL_MAX_S = 15.0
# Near the front a poll waits this long; while the view is stale, at least STALE_POLL_S.
NEAR_POLL_S = 2.0
STALE_POLL_S = 5.0
# Before a release the pre-queue polls at most this often, and at the release its
# polls spread over this many seconds, so a crowd does not ask in the same second.
PREQUEUE_MAX_POLL_S = 60
RELEASE_SPREAD_S = 5
_JITTER_SPAN = 1.2 - 0.8
_random = random.random

# ``status_reply``'s JSON, byte for byte what ``json.dumps(standing(...).as_json(),
# separators=(",", ":"))`` gives; the tail comes from the view (``StatusBasis``).
_WAITING_JSON = (
    b'{"state":"waiting","position":%d,"ahead":%d,"eta_s":%d,"eta_range_s":[%d,%d],'
    b'"retry_after_s":%d%s'
)
_PAUSED_JSON = (
    b'{"state":"waiting","position":%d,"ahead":%d,"eta_s":null,"eta_range_s":null,'
    b'"retry_after_s":%d%s'
)
_READY_JSON = (
    b'{"state":"ready","position":%s,"ahead":0,"eta_s":null,"eta_range_s":null,"retry_after_s":%d%s'
)


@dataclass(frozen=True)
class Estimate:
    """Estimated wait for someone ``ahead`` places from the front, as a range."""

    ahead: int
    low_s: int
    high_s: int

    @property
    def mid_s(self) -> int:
        return (self.low_s + self.high_s) // 2


@dataclass(frozen=True, slots=True)
class StatusBasis:
    """What a waiting student's status check needs of the view, worked out once per
    refresh (and again when the view's health changes), so that the check itself
    only compares their place with it (``status_reply``).
    """

    state: RoomState
    healthy: bool
    frontier: int
    # People per second the line moves at now (0 while paused): the estimate's rate.
    rate: float
    # The rate poll intervals are judged by: never 0 (``poll_rate``).
    poll_rate: float
    poll_max_s: float
    refresh_interval_s: float
    pacer_tick_s: float
    # Positions above release_base need ``place_of`` when a release is scheduled.
    release_at_ms: int | None
    release_base: int
    # The pass-through mode (or a negative frontier, which no script makes):
    # ``standing`` answers those itself.
    irregular: bool
    # The end of a status answer's JSON, the same for every ticket until the next
    # refresh: ``,"paused":…,"reconnecting":…,"updated_at":…}``.
    json_tail: bytes
    updated_at: float


# -- the reference arithmetic: the one copy (``_numbers`` is its fast twin) ----------


def wait_estimate(
    position: int,
    frontier: int,
    rate: float,
    *,
    refresh_interval_s: float,
    pacer_tick_s: float,
) -> Estimate | None:
    """The wait for ``position`` while the line's front is ``frontier`` and it moves at
    ``rate`` people a second; None while admission is paused (``rate`` 0)."""
    ahead = max(0, position - frontier - 1)
    if rate <= 0:
        return None
    expected = (ahead + 1) / rate
    # The pacer ticks a few times a second and the view lags one refresh: the
    # low end cannot beat that; the high end leaves room for a slower backend.
    low = max(0.0, expected * 0.9 - refresh_interval_s)
    high = expected * 1.2 + refresh_interval_s + pacer_tick_s
    return Estimate(ahead, int(low), max(1, int(high + 0.999)))


def poll_rate(rate: float, capacity: float) -> float:
    """The rate a poll's wait is judged by: the line's, or while it is paused what the
    room can sustain; never 0."""
    return max(rate or capacity, 0.001)


def poll_interval(ahead: int, rate: float, poll_max_s: float) -> float:
    """Seconds until a student ``ahead`` places from the front should ask again, before
    jitter, at ``poll_rate``'s ``rate``.

    Far from the front: rarely (up to ``poll_max_s``); near it: every couple of
    seconds, so nobody loses time at the front while the crowd's polls stay few.
    """
    return min(poll_max_s, max(NEAR_POLL_S, ahead / rate / 4))


def poll_max(climbing: bool) -> float:
    """The longest a waiting student's poll waits (``POLL_MAX_S``; less while the auto
    rate climbs)."""
    return CLIMBING_POLL_MAX_S if climbing else POLL_MAX_S


# -- where a ticket stands ---------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    ready: bool
    position: int  # the place in line (0 while the pre-queue's order is not drawn)
    ahead: int
    estimate: Estimate | None
    retry_after_s: int
    # True when the view could not be refreshed lately (Redis unreachable).
    stale: bool
    updated_at: float
    paused: bool
    # Unix ms of the release this student waits for in the pre-queue, else None.
    release_at_ms: int | None = None
    pass_through: bool = False

    @property
    def prequeue(self) -> bool:
        return self.release_at_ms is not None

    def as_json(self) -> dict[str, Any]:
        eta = self.estimate
        body: dict[str, Any] = {
            "state": "ready" if self.ready else "prequeue" if self.prequeue else "waiting",
            "position": self.position or None,
            "ahead": None if self.prequeue else self.ahead,
            "eta_s": eta.mid_s if eta else None,
            "eta_range_s": [eta.low_s, eta.high_s] if eta else None,
            "retry_after_s": self.retry_after_s,
            "paused": self.paused,
            "reconnecting": self.stale,
            "updated_at": int(self.updated_at),
        }
        if self.release_at_ms is not None:
            body["release_at_ms"] = self.release_at_ms
        return body


def place_of(position: int, state: RoomState | None) -> int | None:
    """The place for a ticket's position; None while its pre-queue order is not drawn."""
    if state is None or state.release_at_ms is None or position <= state.release_base:
        return position
    if state.released_n is None:
        return None  # in the pre-queue, before the release
    size = state.released_n - state.release_base
    if position > state.released_n or size <= 0:
        return position
    return state.release_base + release.permute(
        state.release_seed, size, position - state.release_base
    )


def standing(ticket: Ticket, view: RoomView) -> Standing:
    state = view.state
    stale = not view.healthy
    if state is not None and state.mode == "pass-through":
        return Standing(
            True, ticket.position, 0, None, 1, stale, view.updated_at, False, None, True
        )
    place = place_of(ticket.position, state)
    if place is None:
        assert state is not None and state.release_at_ms is not None
        to_release = state.release_at_ms / 1000 - time.time()
        if to_release > PREQUEUE_MAX_POLL_S:
            interval = random.uniform(0.8, 1.0) * PREQUEUE_MAX_POLL_S
        else:
            interval = max(0.0, to_release) + random.uniform(1, RELEASE_SPREAD_S)
        retry = max(1, round(interval))
        return Standing(False, 0, 0, None, retry, stale, view.updated_at, True, state.release_at_ms)
    frontier = state.frontier if state else 0
    paused = bool(state and state.held)
    ready = place <= frontier
    estimate = None if ready else view.estimate(place)
    ahead = 0 if ready else max(0, place - frontier - 1)
    interval = 1.0 if ready else view.poll_interval(ahead)
    if stale:
        interval = max(interval, STALE_POLL_S)
    # Jitter spreads a crowd that arrived in one second over the whole interval.
    retry = max(1, round(interval * random.uniform(0.8, 1.2)))
    return Standing(ready, place, ahead, estimate, retry, stale, view.updated_at, paused)


def status_reply(position: int, basis: StatusBasis) -> tuple[bool, int, bytes] | None:
    """``standing`` and its JSON for the common case, in one step: (ready, retry
    after, body), or None for the cases that ``standing`` itself answers (the
    pass-through mode, the pre-queue of a release before its order is drawn).

    The status check of every waiting student comes here, so it works from the
    view's per-refresh ``StatusBasis`` and formats the JSON from a template. It
    must give exactly what ``standing`` gives (tests/gateway/test_status_path.py).
    """
    numbers = _numbers(position, basis)
    if numbers is None:
        return None
    ready, place, ahead, retry, low, high = numbers
    if ready:
        shown = b"%d" % place if place else b"null"
        return True, retry, _READY_JSON % (shown, retry, basis.json_tail)
    if high < 0:
        return False, retry, _PAUSED_JSON % (place, ahead, retry, basis.json_tail)
    body = _WAITING_JSON % (place, ahead, (low + high) // 2, low, high, retry, basis.json_tail)
    return False, retry, body


def standing_from_basis(ticket: Ticket, basis: StatusBasis) -> Standing | None:
    """``standing(ticket, view)`` from the view's per-refresh basis, for the waiting
    page's refresh; None where ``standing`` must answer (as ``status_reply``).
    tests/gateway/test_status_path.py holds the two together."""
    numbers = _numbers(ticket.position, basis)
    if numbers is None:
        return None
    ready, place, ahead, retry, low, high = numbers
    estimate = None if ready or high < 0 else Estimate(ahead, low, high)
    return Standing(
        ready,
        place,
        ahead,
        estimate,
        retry,
        not basis.healthy,
        basis.updated_at,
        basis.state.held,
    )


def _numbers(position: int, basis: StatusBasis) -> tuple[bool, int, int, int, int, int] | None:
    """(ready, place, ahead, retry after, estimate low, high) as ``standing`` works them
    out, high -1 while admission is paused; None for the cases ``standing`` answers.

    The fast copy of ``wait_estimate`` and ``poll_interval``: change them together
    (tests/gateway/test_status_path.py fails when they differ)."""
    if basis.irregular:
        return None
    place = position
    if basis.release_at_ms is not None and position > basis.release_base:
        mapped = place_of(position, basis.state)
        if mapped is None:
            return None
        place = mapped
    frontier = basis.frontier
    # The jitter as random.uniform(0.8, 1.2) draws it, without its call.
    jitter = 0.8 + _JITTER_SPAN * _random()
    if place <= frontier:
        retry = round((1.0 if basis.healthy else STALE_POLL_S) * jitter)
        return True, place, 0, retry if retry >= 1 else 1, -1, -1
    ahead = place - frontier - 1
    # poll_interval: min(poll max, max(NEAR_POLL_S, ahead / rate / 4)), and
    # STALE_POLL_S at least if stale
    interval = ahead / basis.poll_rate / 4
    floor = NEAR_POLL_S if basis.healthy else STALE_POLL_S
    if interval > basis.poll_max_s:
        interval = basis.poll_max_s
    elif interval < floor:
        interval = floor
    retry = round(interval * jitter)
    if retry < 1:
        retry = 1
    rate = basis.rate
    if rate <= 0:
        return False, place, ahead, retry, -1, -1
    # wait_estimate
    expected = (ahead + 1) / rate
    refresh = basis.refresh_interval_s
    low_s = expected * 0.9 - refresh
    low = int(low_s) if low_s > 0.0 else 0
    high = int(expected * 1.2 + refresh + basis.pacer_tick_s + 0.999)
    if high < 1:
        high = 1
    return False, place, ahead, retry, low, high
