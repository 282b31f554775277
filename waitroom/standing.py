"""Where a student with a ticket stands: waiting (with place and estimate) or ready.

Computed from the signed ticket and the worker's cached view alone, so the lean
ASGI layer and the Quart pages give the same answer without a Redis round trip.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from waitroom.tickets import Ticket
from waitroom.view import Estimate, RoomView


@dataclass(frozen=True)
class Standing:
    ready: bool
    position: int
    ahead: int
    estimate: Estimate | None
    retry_after_s: int
    # True when the view could not be refreshed lately (Redis unreachable).
    stale: bool
    updated_at: float
    paused: bool

    def as_json(self) -> dict[str, Any]:
        eta = self.estimate
        return {
            "state": "ready" if self.ready else "waiting",
            "position": self.position,
            "ahead": self.ahead,
            "eta_s": eta.mid_s if eta else None,
            "eta_range_s": [eta.low_s, eta.high_s] if eta else None,
            "retry_after_s": self.retry_after_s,
            "paused": self.paused,
            "reconnecting": self.stale,
            "updated_at": int(self.updated_at),
        }


def standing(ticket: Ticket, view: RoomView) -> Standing:
    state = view.state
    frontier = state.frontier if state else 0
    paused = bool(state and (state.paused or state.mode == "queue-all"))
    ready = ticket.position <= frontier
    estimate = None if ready else view.estimate(ticket.position)
    ahead = 0 if ready else max(0, ticket.position - frontier - 1)
    interval = 1.0 if ready else view.poll_interval(ahead)
    if not view.healthy:
        interval = max(interval, 5.0)
    # Jitter spreads a crowd that arrived in one second over the whole interval.
    retry = max(1, round(interval * random.uniform(0.8, 1.2)))
    return Standing(
        ready, ticket.position, ahead, estimate, retry, not view.healthy, view.updated_at, paused
    )
