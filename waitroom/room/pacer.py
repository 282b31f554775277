"""The pacer: moves the room's admission frontier at the configured rate.

Every gateway worker runs one, but only the holder of the room's Redis lease acts:
``advance.lua`` renews the lease for its holder and hands it to the first caller
after it lapses, so if the holder dies another worker takes over within
``pacer_lease_s`` plus one poll. Non-holders ask three times per lease period.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket

from waitroom.errors import StoreUnavailable
from waitroom.line.state import Queue, Tick
from waitroom.room.governor import Governor
from waitroom.room.snapshot import RoomView
from waitroom.room.telemetry import Sampler
from waitroom.shared.loops import every

log = logging.getLogger(__name__)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Pacer:
    def __init__(
        self,
        queue: Queue,
        view: RoomView,
        *,
        tick_s: float,
        lease_s: float,
        sampler: Sampler | None = None,
        governor: Governor | None = None,
    ) -> None:
        self.queue = queue
        self.view = view
        self.sampler = sampler
        self.governor = governor
        self.tick_s = tick_s
        self.lease_s = lease_s
        self.id = worker_id()
        self.holder = False
        self.last_tick: Tick | None = None

    async def step(self) -> Tick | None:
        """One tick; returns it, or None when Redis could not be reached."""
        try:
            tick = await self.queue.tick(self.id)
            if tick is None:
                await self.view.restore()
                tick = await self.queue.tick(self.id)
        except StoreUnavailable:
            self.holder = False
            return None
        if tick is not None and tick.holder != self.holder:
            log.info(
                "waitroom: worker %s %s the pacer lease", self.id, "took" if tick.holder else "lost"
            )
        self.holder = bool(tick and tick.holder)
        self.last_tick = tick
        if tick is not None and tick.holder and self.sampler is not None:
            sample = await self.sampler.maybe_sample(tick, self.view.state)
            if sample is not None and self.governor is not None:
                await self.governor.update(sample, self.view.state)
        return tick

    async def run(self) -> None:
        """Tick until cancelled: every ``pacer_tick_s`` while holding the lease,
        three times per lease period while not; a failed step gives the lease up."""
        await every(self._interval, self.step, what="pacer step", on_error=self._lost, logger=log)

    def _interval(self) -> float:
        return self.tick_s if self.holder else self.lease_s / 3

    def _lost(self) -> None:
        self.holder = False
