"""Every Redis key waitroom uses, in one place.

All keys of one room share the hash tag ``{<room>}`` so they live in one Redis
Cluster slot and a Lua script may touch them together. Each key is bounded: the
state and active set carry a TTL refreshed on write (and the active set holds at
most ``max_active`` members), the lease a PX expiry, the config a fixed set of fields,
a spent-ticket marker the ticket's own lifetime.
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
        admitted (total), active (count at the last tick)."""
        return f"{self._tag}:state"

    @property
    def active(self) -> str:
        """Sorted set: one member per recent admission, scored by its expiry (ms)."""
        return f"{self._tag}:active"

    @property
    def config(self) -> str:
        """Hash: admission settings that admins change at run time (rate, max_active, paused)."""
        return f"{self._tag}:config"

    @property
    def lease(self) -> str:
        """String: id of the gateway worker that holds the pacer lease (PX expiry)."""
        return f"{self._tag}:pacer"

    def spent(self, ticket_id: str) -> str:
        """String: marks a ticket already traded for a pass (EX: the ticket's lifetime)."""
        return f"{self._tag}:spent:{ticket_id}"

    def lookups(self, pass_id: str) -> str:
        """String: lookups made with one admission pass (PX: the pass's lifetime)."""
        return f"{self._tag}:lookups:{pass_id}"

    def joins(self, client: str) -> str:
        """String: places in line one client took in the current window (PX: the window)."""
        return f"{self._tag}:joins:{client}"
