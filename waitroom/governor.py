"""The governor: admission that follows the backend's health, and makes up for no-shows.

Run by the pacer's lease holder once a second, on the sample the ``Sampler`` just
took (the backend's p95 latency and error share over the last five seconds, as
every gateway saw them, and the room's admitted/came counts).

- **AIMD.** While the backend's p95 passes ``backend_p95_target_ms`` or its error
  share passes ``backend_error_target``, the rate is cut to 70 % (at most once per
  window, so each cut is seen before the next; never below 5 % of the admin's
  rate). While it is healthy the rate climbs back by 5 % of the admin's rate every
  two seconds; at the admin's rate the governor lets go and the admin's rate
  rules again, so an admin who raises it on a healthy backend sees it at once.
- **No-shows.** Some admitted students never come back for their pass. Over the
  last minute, the share who came (passes issued, against admissions a few
  seconds earlier, to give them time to arrive) sets a factor by which the pacer
  admits faster, so the students reaching the backend match the target. The factor
  is bounded (at most 2) and the concurrency cap still holds.

Decisions live in the room's state (``govern.lua``) with a reason in words that
the admin page shows.
"""

from __future__ import annotations

import logging
from collections import deque

from waitroom.config import Settings
from waitroom.errors import StoreUnavailable
from waitroom.queue import Queue, RoomState
from waitroom.telemetry import WINDOW_S, Sample

log = logging.getLogger(__name__)

DECREASE = 0.7
INCREASE_SHARE = 0.05  # of the admin's rate, per step
INCREASE_EVERY_S = 2.0
FLOOR_SHARE = 0.05
NOSHOW_WINDOW_S = 60.0
# Admitted students need a few seconds to notice and come: count their pass
# against admissions this much earlier.
NOSHOW_LAG_S = 5.0
# Fewer admissions than this in the window say nothing reliable about no-shows.
NOSHOW_MIN_ADMITTED = 20
NOSHOW_MAX_FACTOR = 2.0


class Governor:
    def __init__(self, queue: Queue, settings: Settings) -> None:
        self.queue = queue
        self.settings = settings
        self._last_decrease = 0.0
        self._last_increase = 0.0
        self._history: deque[Sample] = deque()

    async def update(self, sample: Sample, state: RoomState | None) -> None:
        if state is None:
            return
        self._remember(sample)
        effective, reason = self._aimd(sample, state)
        factor = self._noshow_factor(sample, state)
        if (effective, factor) == (state.effective_rate, _factor_or_none(state.noshow_factor)):
            return
        if factor != _factor_or_none(state.noshow_factor):
            came = f"{(1 / factor if factor else 1):.0%}"
            reason = reason or f"{came} of admitted students came: admitting faster to make up"
        try:
            await self.queue.govern(effective, factor, reason or state.governor_reason, sample.t)
        except StoreUnavailable as exc:
            log.debug("waitroom: governor decision not recorded: %s", exc)
            return
        if reason:
            log.info("waitroom: admission rate %s: %s", _rate_text(effective, state.rate), reason)

    def _aimd(self, sample: Sample, state: RoomState) -> tuple[float | None, str]:
        ceiling = state.rate
        current = state.effective_rate
        s = self.settings
        trouble = ""
        if sample.p95_ms is not None and 0 < s.backend_p95_target_ms < sample.p95_ms:
            trouble = (
                f"backend p95 {sample.p95_ms:.0f} ms over the {s.backend_p95_target_ms:g} ms target"
            )
        elif sample.error_rate is not None and sample.error_rate > s.backend_error_target:
            trouble = (
                f"backend errors {sample.error_rate:.0%} over the "
                f"{s.backend_error_target:.0%} target"
            )
        if trouble:
            if sample.t - self._last_decrease < WINDOW_S:
                return current, ""  # the last cut has not shown its effect yet
            self._last_decrease = sample.t
            lowered = max(ceiling * FLOOR_SHARE, (current or ceiling) * DECREASE)
            return round(lowered, 4), f"lowered: {trouble}"
        if current is None:
            return None, ""
        if current >= ceiling:
            return None, "back at the admin's rate"
        if sample.t - self._last_increase < INCREASE_EVERY_S:
            return current, ""
        self._last_increase = sample.t
        raised = current + ceiling * INCREASE_SHARE
        if raised >= ceiling:
            return None, "backend healthy: back at the admin's rate"
        return round(raised, 4), "backend healthy: raising step by step"

    def _remember(self, sample: Sample) -> None:
        self._history.append(sample)
        while self._history and sample.t - self._history[0].t > NOSHOW_WINDOW_S + NOSHOW_LAG_S:
            self._history.popleft()

    def _noshow_factor(self, sample: Sample, state: RoomState) -> float | None:
        if not self.settings.noshow_compensation or len(self._history) < 2:
            return _factor_or_none(state.noshow_factor)
        # Admissions in [oldest, now - lag] against passes in [oldest + lag, now]:
        # two spans of the same length, the second a few seconds later.
        oldest = self._history[0]
        lagged = next((x for x in reversed(self._history) if sample.t - x.t >= NOSHOW_LAG_S), None)
        later = next((x for x in self._history if x.t - oldest.t >= NOSHOW_LAG_S), None)
        if lagged is None or later is None or sample.t - oldest.t < NOSHOW_WINDOW_S / 2:
            return _factor_or_none(state.noshow_factor)
        admitted = lagged.admitted_total - oldest.admitted_total
        came = sample.shown_total - later.shown_total
        if admitted < NOSHOW_MIN_ADMITTED or came < 0:
            return _factor_or_none(state.noshow_factor)
        share = max(came / admitted, 1 / NOSHOW_MAX_FACTOR)
        target = min(NOSHOW_MAX_FACTOR, 1 / share) if share < 1 else 1.0
        # Move part of the way each second: a minute's measurement, not a second's.
        smoothed = state.noshow_factor + 0.2 * (target - state.noshow_factor)
        return _factor_or_none(round(smoothed, 3))


def _factor_or_none(factor: float) -> float | None:
    return factor if factor > 1.01 else None


def _rate_text(effective: float | None, ceiling: float) -> str:
    if effective is None:
        return f"{ceiling:g}/s (the admin's)"
    return f"{effective:g}/s of the admin's {ceiling:g}/s"
