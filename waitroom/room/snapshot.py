"""Each worker's cached view of its room, refreshed a few times a second.

This is what makes waiting cheap: a waiting student's status check compares the
position in their signed ticket with the frontier held here, with no Redis round
trip. One worker costs Redis one pipelined read per ``refresh_interval_s``
whatever the size of the crowd.

The view also pre-renders the public queue state (JSON body and ETag), so the
lean ASGI layer answers it by copying bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass

from waitroom.errors import StoreUnavailable
from waitroom.line import release
from waitroom.line.state import Queue, RoomState
from waitroom.line.store import drop_idle_connections
from waitroom.room.estimate import (
    Estimate,
    StatusBasis,
    poll_interval,
    poll_max,
    poll_rate,
    wait_estimate,
)
from waitroom.shared.loops import every

log = logging.getLogger(__name__)

# How far back the achieved admission rate is measured.
RATE_WINDOW_S = 30.0
# Less history than this and the configured rate is the better estimate.
RATE_MIN_SPAN_S = 5.0
# A worker that never saw the line waits this long after Redis returns before it
# starts a new line in an empty Redis (see ``restore``).
RESTORE_GRACE_S = 5.0


def capacity_rate(rate: float, max_active: int, active_window_s: float) -> float:
    """The admission rate a room can sustain: its rate, or the cap's turnover."""
    return min(rate, max_active / active_window_s)


def achieved_rate(span_s: float, waiting_at_start: int, admitted: int, capacity: float) -> float:
    """The rate the line moved at: ``admitted`` over the last ``span_s`` seconds, which
    began with ``waiting_at_start`` people in line; else ``capacity``.

    Only a window with a line throughout says how fast the line moves; an idle room
    admits at the arrival rate, which says nothing. A line that did not move at all
    (the cap full) is no news either.
    """
    if span_s >= RATE_MIN_SPAN_S and waiting_at_start > 0 and admitted > 0:
        return min(admitted / span_s, capacity * 1.05)
    return capacity


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """What the view is configured with (``waitroom.gateway.services`` builds it)."""

    room: str
    refresh_interval_s: float
    pacer_tick_s: float
    active_window_s: float
    # The room's own until the line's state is read (then the admin's controls rule).
    rate: float
    max_active: int
    pass_ttl_s: int


class RoomView:
    def __init__(self, queue: Queue, settings: ViewSettings) -> None:
        self.queue = queue
        self.settings = settings
        self.state: RoomState | None = None
        self.healthy = False
        self.updated_at = 0.0  # wall clock of the last successful read
        # (monotonic, admitted, waiting, seq) per successful read
        self._samples: deque[tuple[float, int, int, int]] = deque()
        self._unreachable_seen_at: float | None = None
        self._rate = self.capacity_rate()
        self.state_body = b"{}"
        self.state_etag = '"0"'
        self._outage_logged = False
        self._basis: StatusBasis | None = None

    # -- refreshing -------------------------------------------------------------

    async def refresh(self) -> RoomState | None:
        try:
            state = await self.queue.read()
            if state is None:
                await self.restore()
                state = await self.queue.read()
            elif self._behind(state):
                await self.catch_up(state)
                state = await self.queue.read()
        except StoreUnavailable as exc:
            if self.healthy and self.state is not None:
                self.healthy = False
                self._render_public_state()  # tell pollers the numbers are frozen
            self.healthy = False
            self._unreachable_seen_at = time.monotonic()
            if not self._outage_logged:
                log.warning("waitroom: %s; serving last known state", exc)
                self._outage_logged = True
            return self.state
        if state is None:  # waiting for a worker that remembers the line (restore)
            return self.state
        if self._outage_logged:
            log.warning("waitroom: redis reachable again")
            self._outage_logged = False
            # Idle connections opened before the outage are dead; the next join,
            # spend or count to pick one would fail (and a spend or count fail open).
            await drop_idle_connections(self.queue.client)
        self._observe(state)
        return state

    async def restore(self) -> None:
        """Recreate the room's state in an empty Redis from what this worker last saw.

        Places already handed out keep their meaning (same epoch, same positions),
        and the frontier does not jump, so nobody is admitted early or stranded.
        """
        last = self.state
        if last is None:
            # This worker never saw the line. If Redis was unreachable until just now,
            # it may have come back empty: give workers that remember the line a
            # moment to restore it rather than start a new one that voids every ticket.
            since = self._unreachable_seen_at
            if since is not None and time.monotonic() - since < RESTORE_GRACE_S:
                return
            created = await self.queue.init()
        else:
            # Places issued since our last read are unknown: skip past them rather
            # than hand any place out twice.
            seq = last.seq + self._slack()
            created = await self.queue.init(
                seq, last.frontier, last.epoch, released_n=last.released_n, config=last.config
            )
        if created and last is not None:
            log.warning(
                "waitroom: room %r had no state in redis; restored seq=%d frontier=%d",
                self.settings.room,
                seq,
                last.frontier,
            )

    def _behind(self, state: RoomState) -> bool:
        """Whether Redis holds this line as it was before what this worker saw: a
        replica promoted before it had the primary's last writes."""
        last = self.state
        if last is None or state.epoch != last.epoch:
            return False
        lost_release = (
            last.released_n is not None
            and state.released_n is None
            and state.release_at_ms is not None
        )
        return state.seq < last.seq or state.frontier < last.frontier or lost_release

    async def catch_up(self, state: RoomState) -> None:
        """Move the line back up to what this worker saw: a place issued is never
        issued again, an admission shown is never taken back."""
        last = self.state
        assert last is not None
        # Joins confirmed by a replica (WAIT) are all on the promoted one: a place
        # this worker saw but the replica lacks was never answered. Without WAIT,
        # places may have been issued since this worker's last read: skip past them.
        seq = last.seq if self.queue.replicas is not None else last.seq + self._slack()
        skipped, restored = await self.queue.catch_up(
            last.epoch, seq, last.frontier, last.released_n
        )
        if skipped or restored:
            log.warning(
                "waitroom: room %r in redis was behind what this worker saw (a failover "
                "to a replica that lacked the last writes?): %d place(s) skipped, "
                "%d admission(s) restored",
                self.settings.room,
                skipped,
                restored,
            )

    def _slack(self) -> int:
        """Places that may have been issued between our last read and the reset."""
        if len(self._samples) < 2:
            return 10
        t0, _, _, seq0 = self._samples[0]
        t1, _, _, seq1 = self._samples[-1]
        joins_per_s = max(0.0, (seq1 - seq0) / max(t1 - t0, 0.001))
        return 10 + math.ceil(joins_per_s * 2 * self.settings.refresh_interval_s)

    def _observe(self, state: RoomState) -> None:
        now = time.monotonic()
        previous = self.state
        # A new line, or a restored one whose admission count started again at 0:
        # the old samples would measure a negative rate.
        if previous is not None and (
            state.epoch != previous.epoch or state.admitted < previous.admitted
        ):
            self._samples.clear()
        self.state = state
        self.healthy = True
        self.updated_at = time.time()
        self._samples.append((now, state.admitted, state.waiting, state.seq))
        while self._samples and now - self._samples[0][0] > RATE_WINDOW_S:
            self._samples.popleft()
        self._rate = self._measure_rate()
        self._basis = None
        self._render_public_state()

    async def run(self) -> None:
        """Refresh forever (until cancelled); a failed refresh never ends the loop."""
        await every(
            self.settings.refresh_interval_s,
            self.refresh,
            what="refreshing the room's view",
            on_error=self._unhealthy,
            logger=log,
        )

    def _unhealthy(self) -> None:
        self.healthy = False

    def pass_ttl_s(self) -> int:
        return self.state.pass_ttl_s if self.state else self.settings.pass_ttl_s

    # -- estimates --------------------------------------------------------------

    def capacity_rate(self) -> float:
        """The admission rate the room can sustain: the rate, or the cap's turnover."""
        s = self.state
        rate = s.admission_rate if s else self.settings.rate
        cap = s.max_active if s else self.settings.max_active
        return capacity_rate(rate, cap, self.settings.active_window_s)

    def line_rate(self) -> float:
        """People per second that the line moves at now, as measured (worked out once
        per refresh); not the pacer's ``RoomState.admission_rate``, which it follows."""
        return self._rate

    def _measure_rate(self) -> float:
        """The achieved rate over the last half minute while people were waiting, else
        what the room can sustain; zero while admission is paused.
        """
        s = self.state
        if s is not None and s.held:
            return 0.0
        capacity = self.capacity_rate()
        if len(self._samples) < 2:
            return capacity
        t0, admitted0, waiting0, _ = self._samples[0]
        t1, admitted1, _, _ = self._samples[-1]
        return achieved_rate(t1 - t0, waiting0, admitted1 - admitted0, capacity)

    # The arithmetic is ``waitroom.room.estimate``'s; the view gives it its inputs.

    def estimate(self, position: int) -> Estimate | None:
        """Wait estimate for ``position``; None while admission is paused."""
        return wait_estimate(
            position,
            self.state.frontier if self.state else 0,
            self.line_rate(),
            refresh_interval_s=self.settings.refresh_interval_s,
            pacer_tick_s=self.settings.pacer_tick_s,
        )

    def poll_interval(self, ahead: int) -> float:
        """Seconds until a student ``ahead`` places from the front asks again, before
        jitter."""
        return poll_interval(ahead, self._poll_rate(), self.poll_max_s())

    def _poll_rate(self) -> float:
        return poll_rate(self.line_rate(), self.capacity_rate())

    def poll_max_s(self) -> float:
        """The longest a waiting student's poll waits (``POLL_MAX_S``)."""
        return poll_max(self.state is not None and self.state.climbing)

    def status_basis(self) -> StatusBasis | None:
        """This refresh's basis for status checks; None while the state is unknown.

        Built on first use after a refresh, and again whenever ``state`` or
        ``healthy`` no longer match it, whoever changed them.
        """
        basis = self._basis
        if basis is None or basis.state is not self.state or basis.healthy != self.healthy:
            basis = self._basis = self._make_basis()
        return basis

    def _make_basis(self) -> StatusBasis | None:
        s = self.state
        if s is None:
            return None
        # The inputs of ``estimate`` and ``poll_interval``, for their fast copy.
        rate = self.line_rate()
        paused = s.held
        stale = not self.healthy
        tail = b',"paused":%s,"reconnecting":%s,"updated_at":%d}' % (
            b"true" if paused else b"false",
            b"true" if stale else b"false",
            int(self.updated_at),
        )
        return StatusBasis(
            state=s,
            healthy=self.healthy,
            frontier=s.frontier,
            rate=rate,
            poll_rate=self._poll_rate(),
            poll_max_s=self.poll_max_s(),
            refresh_interval_s=self.settings.refresh_interval_s,
            pacer_tick_s=self.settings.pacer_tick_s,
            release_at_ms=s.release_at_ms,
            release_base=s.release_base,
            irregular=s.mode == "pass-through" or s.frontier < 0,
            json_tail=tail,
            updated_at=self.updated_at,
        )

    # -- public state -----------------------------------------------------------

    def _render_public_state(self) -> None:
        s = self.state
        assert s is not None
        rate = round(self.line_rate(), 3)
        body = {
            "room": self.settings.room,
            "epoch": s.epoch,
            "frontier": s.frontier,
            "last_position": s.seq,
            "waiting": s.waiting,
            "rate": rate,
            "paused": s.held,
            # The page's polls wait at most this long (POLL_MAX_S).
            "poll_max_s": self.poll_max_s(),
            # Frozen numbers while Redis is unreachable: the page says "reconnecting".
            "stale": not self.healthy,
            "banner": dict(s.banner),
        }
        if s.release_at_ms is not None:
            body["release"] = release.public_info(
                s.release_at_ms, s.release_seed, s.release_base, s.released_n
            )
        self.state_body = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        digest = hashlib.blake2b(self.state_body, digest_size=8).hexdigest()
        self.state_etag = f'"{digest}"'
