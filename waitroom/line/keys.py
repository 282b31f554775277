"""Every Redis key waitroom uses, in one place.

All keys of one room share the hash tag ``{<room>}`` so they live in one Redis
Cluster slot and a Lua script may touch them together. Each key is bounded: the
state and active set carry a TTL refreshed on write (and the active set holds at
most ``max_active`` members), the lease a PX expiry, the config a fixed set of fields,
a spent-ticket marker the ticket's own lifetime, the audit log and the live series a
length (LTRIM), backend counters and admin sessions a TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "waitroom"


@dataclass(frozen=True)
class RoomKeys:
    room: str

    @property
    def _tag(self) -> str:
        return f"{PREFIX}:{{{self.room}}}"

    @property
    def state(self) -> str:
        """Hash: seq (last position issued), frontier, credit, last_ms, epoch,
        admitted (total), active (count at the last tick), and the governor's
        decisions (effective_rate, noshow_factor, governor_reason, governor_at,
        governor_kind, search: the auto rate's search as one small JSON value)."""
        return f"{self._tag}:state"

    @property
    def active(self) -> str:
        """Sorted set: one member per recent admission, scored by its expiry (ms)."""
        return f"{self._tag}:active"

    @property
    def config(self) -> str:
        """Hash: what admins change at run time (``waitroom.line.controls.FIELDS``) and the
        scheduled release (release_at, release_seed, release_base)."""
        return f"{self._tag}:config"

    @property
    def lease(self) -> str:
        """String: id of the gateway worker that holds the pacer lease (PX expiry)."""
        return f"{self._tag}:pacer"

    def spent(self, ticket_id: str) -> str:
        """String: marks a ticket already traded for a pass (EX: the ticket's lifetime)."""
        return f"{self._tag}:spent:{ticket_id}"

    @property
    def audit(self) -> str:
        """List: admin changes, newest first, JSON each (capped by LTRIM)."""
        return f"{self._tag}:audit"

    @property
    def series(self) -> str:
        """List: one JSON sample a second for the admin's live chart (capped by LTRIM)."""
        return f"{self._tag}:series"

    def backend(self, second: int) -> str:
        """Hash: forwarded requests in one wall-clock second, summed over workers:
        n, err, and a count per latency bucket (EX: a couple of minutes)."""
        return f"{self._tag}:backend:{second}"

    def admin_session(self, session_id: str) -> str:
        """String: a live admin session (EX: the session lifetime); logout deletes it."""
        return f"{self._tag}:admin:session:{session_id}"

    def login_failures(self, who: str) -> str:
        """Counter: failed admin logins from one address, or ``*`` for all (EX: window)."""
        return f"{self._tag}:admin:failures:{who}"

    @property
    def metrics(self) -> str:
        """Hash: room-wide counters since the room began, summed over every gateway
        worker, and the governor's changes by kind (fixed set of fields; EX renewed
        on write)."""
        return f"{self._tag}:metrics"

    def lookups(self, pass_id: str) -> str:
        """String: lookups made with one admission pass (PX: the pass's lifetime)."""
        return f"{self._tag}:lookups:{pass_id}"

    def joins(self, client: str) -> str:
        """String: places in line one client took in the current window (PX: the window)."""
        return f"{self._tag}:joins:{client}"

    def prequeue_joins(self, client: str) -> str:
        """String: places one client holds in a scheduled release's pre-queue (PX: until
        the release, and a join window more)."""
        return f"{self._tag}:prequeue:{client}"
