"""The governor: admission that follows the backend's health, and makes up for no-shows.

Run by the pacer's lease holder once a second, on the sample the ``Sampler`` just
took (the backend's p95 latency, error share, and lookups sent and answered over
the last five seconds, as every gateway saw them, and the room's admitted/came
counts).

- **AIMD** (a fixed rate). While the backend's p95 passes ``backend_p95_target_ms``
  or its error share passes ``backend_error_target``, the rate is cut to 70 % (at
  most once per window, so each cut is seen before the next; never below 5 % of
  the admin's rate). While it is healthy the rate climbs back by 5 % of the admin's
  rate every two seconds; at the admin's rate the governor lets go and the admin's
  rate rules again, so an admin who raises it on a healthy backend sees it at once.
- **No-shows** (a fixed rate). Some admitted students never come back for their
  pass. Over the last minute, the share who came (passes issued, against
  admissions a few seconds earlier, to give them time to arrive) sets a factor by
  which the pacer admits faster, so the students reaching the backend match the
  target. The factor is bounded (at most 2) and the concurrency cap still holds.
- **The auto rate** (``rate_auto``). Nobody knows a board's backend capacity in
  advance, so the governor searches for it, the admin's rate being the most it may
  reach. It starts low and, while the backend stays healthy, raises the rate by
  half every ``SETTLE_S`` (admitted students reach the backend a few seconds after
  their admission, and a raise is judged on a whole window after that). Healthy:
  p95 under the target and under ``KNEE_FACTOR`` times the lowest healthy p95 of
  the last ``BASELINE_S`` (a worker pool past its capacity queues: its latency
  climbs, then it answers 5xx), errors under theirs; trouble the window still
  remembers but the newest second no longer shows is over. At the knee admission is cut
  so the backend's queue drains, and what the backend answered a second while
  saturated becomes its capacity, counted in lookups (what a result site is sized
  by; its pages cost it little), not the rate that was set. The search then holds
  at ``HOLD_SHARE`` of it, converted to admissions by the lookups each admission
  brings (measured from what is sent, no-shows included: no no-show factor).
  After ``PROBE_AFTER_S`` healthy it probes upward in small steps, so a capacity
  that grows is found, and goes back to the hold when the backend, sent more, no
  longer answers more and falls behind. A slowdown is cut at once to what the
  backend answers now; a burst in which it kept up with what it was sent changes
  no capacity, and its drain is sized by the capacity, not by the burst.

Decisions live in the room's state (``govern.lua``) with a reason in words that
the admin page shows and a kind from a fixed set that ``/metrics`` counts; the
auto rate's search lives there too, so a new lease holder carries on from it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from waitroom.errors import StoreUnavailable
from waitroom.line.state import AUTO_START_RATE, Queue, RoomState, Search
from waitroom.room.telemetry import WINDOW_S, Sample

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

# -- the auto rate ----------------------------------------------------------------
# The search starts at 2 % of the most it may reach, between AUTO_START_RATE and
# START_MAX: with the default 1000/s at 20/s, which few result backends fail at,
# and from which a board's typical 300 lookups a second is seven raises away.
START_SHARE = 0.02
START_MAX = 20.0
# Slow start: each raise adds half. Past a knee the overshoot is then at most 50 %,
# which a short drain undoes; doubling would leave a queue twice as long.
CLIMB = 1.5
# Admitted students reach the backend this long after their admission (the poll
# that tells them, the page, the lookup), and the sample judges the last WINDOW_S:
# a raise is judged only once a whole window shows it.
EFFECT_LAG_S = 3.0
SETTLE_S = WINDOW_S + EFFECT_LAG_S
# A knee: p95 above this many times the backend's healthy p95, and above the floor
# (a 5 ms backend at 12 ms is noise, not a queue). An unloaded worker pool answers
# in about its service time; near its capacity queueing adds a little, past it the
# queue grows every second and latency with it.
KNEE_FACTOR = 3.0
KNEE_FLOOR_MS = 100.0
# The healthy p95 is the lowest of this long; a backend that got slower for good
# (no healthy sample for this long) gets a new normal.
BASELINE_S = 30.0
# Holding below the capacity leaves room for bursts and for the estimates' own noise
# (a few per cent each at 40 lookups a second): a pool at 85-90 % barely queues.
HOLD_SHARE = 0.85
# The drain after a knee: admission at this share of the capacity, deeper the
# further past it admission was (a queue built at 150 % needs a deep cut to drain
# in a few seconds; one built at 105 %, or a burst at the hold, a shallow one).
# At 1.5 a step past it by 14 % (the 200 lookups/s seed's 228/s) drains at 79 %,
# within the band a hold may stray to; at 2, 72 % became 68 % by the estimates'
# noise, and the drain of a queue caught within seconds needs no more.
DRAIN_DEEPEST = 0.5
DRAIN_SHALLOWEST = 0.8
DRAIN_SLOPE = 1.5
# A window in which it was sent this much more than it answered: it fell behind,
# its queue grew (a few per cent are the requests still on their way at the edges).
BEHIND_SHARE = 1.05
# While draining, seconds it answered within this share of its best were saturated.
SATURATED_SHARE = 0.9
# Still in trouble this long after a cut: cut again, as the fixed rate's AIMD does.
DRAIN_MAX_S = 2 * SETTLE_S
# A knee whose throughput is below this share of the capacity found before was a
# failure (an outage, errors at any load), not a measurement: climb again from
# half the old capacity instead of holding at a number that means nothing.
RELEARN_SHARE = 1 / 3
# Healthy this long at the hold: probe upward by this share of the capacity a
# step, one step per SETTLE_S, until the next knee.
PROBE_AFTER_S = 30.0
PROBE_SHARE = 0.05
# A raise is judged only if admissions used this much of the rate: an empty line
# or a full concurrency cap says nothing about what the backend could take.
BUSY_SHARE = 0.8
CAP_FULL_SHARE = 0.95
AUTO_FLOOR = 1.0
# Requests per admission outside this are a measurement gone wrong. Each steady
# sample's counts fade by this much a second (about ten seconds' memory: the mix of
# pages and lookups changes slowly), and a new lease holder starts from the last
# estimate as if it were this many admissions.
PER_ADMISSION_RANGE = (0.1, 50.0)
PER_ADMISSION_FADE = 0.9
PER_ADMISSION_SEED = 100.0
# Until admission has held still long enough to measure them (a ramp's load lags
# the rate, so a measurement during one is off): a student looks their result up.
PER_ADMISSION_GUESS = 1.0

# Kinds of change, for /metrics (bounded label values).
Kind = Literal[
    "lowered",  # fixed rate: the backend struggled, rate cut
    "raised",  # fixed rate: healthy again, rate raised a step
    "released",  # fixed rate: back at the admin's rate
    "noshow",  # fixed rate: no-show factor changed
    "fixed",  # the admin switched the auto rate off
    "start",  # auto rate: search started
    "climb",  # auto rate: healthy, raised by half
    "knee",  # auto rate: the backend struggled, admission cut while it drains
    "hold",  # auto rate: capacity found, holding below it
    "probe",  # auto rate: healthy at the hold, probing upward
    "ceiling",  # auto rate: held at the admin's rate
]
KINDS: tuple[str, ...] = get_args(Kind)


@dataclass(frozen=True)
class Decision:
    effective_rate: float | None
    noshow_factor: float | None
    reason: str
    kind: Kind | None  # None: no change to count (the search's measurements only)
    search: Search | None = None


class Governor:
    def __init__(
        self,
        queue: Queue,
        *,
        p95_target_ms: float,
        error_target: float,
        noshow_compensation: bool,
    ) -> None:
        self.queue = queue
        # The backend's targets (WAITROOM_BACKEND_P95_TARGET_MS, ..._ERROR_TARGET;
        # a p95 target of 0 is none), and whether no-shows are made up for.
        self.p95_target_ms = p95_target_ms
        self.error_target = error_target
        self.noshow_compensation = noshow_compensation
        self._last_decrease = 0.0
        self._last_increase = 0.0
        self._history: deque[Sample] = deque()
        # The auto rate's healthy p95s, (t, ms), and its per-admission estimate.
        self._healthy: deque[tuple[float, float]] = deque()
        self._per_admission_sums = (0.0, 0.0)  # lookups, admissions (fading)
        self._saturated: list[float] = []  # lookups answered a second while draining
        # Whether the backend fell behind what it was sent since the knee; a new
        # lease holder, not knowing, takes the drain's measurement as it is.
        self._fell_behind = True

    async def update(self, sample: Sample, state: RoomState | None) -> None:
        if state is None:
            return
        self._remember(sample)
        decision = self._search(sample, state) if state.rate_auto else self._fixed(sample, state)
        if decision is None:
            return
        try:
            await self.queue.govern(
                decision.effective_rate,
                decision.noshow_factor,
                decision.reason,
                sample.t,
                kind=decision.kind or "",
                search=decision.search,
            )
        except StoreUnavailable as exc:
            log.debug("waitroom: governor decision not recorded: %s", exc)
            return
        if decision.kind is None:
            return
        rate = _rate_text(decision.effective_rate, state.rate, state.rate_auto)
        log.info("waitroom: admission rate %s: %s", rate, decision.reason)

    # -- a fixed rate: AIMD below the admin's rate, and no-shows made up -------------

    def _fixed(self, sample: Sample, state: RoomState) -> Decision | None:
        if state.search.phase:
            # The admin switched the search off: their rate rules from now on (the
            # capacity found is kept, for a search that starts again).
            search = dataclasses.replace(state.search, phase="", since=sample.t)
            reason = "fixed rate: the admin's rate rules"
            return Decision(None, None, reason, "fixed", search)
        effective, reason, kind = self._aimd(sample, state)
        factor = self._noshow_factor(sample, state)
        if (effective, factor) == (state.effective_rate, _factor_or_none(state.noshow_factor)):
            return None
        if factor != _factor_or_none(state.noshow_factor) and not reason:
            came = f"{(1 / factor if factor else 1):.0%}"
            reason = f"{came} of admitted students came: admitting faster to make up"
            kind = "noshow"
        return Decision(effective, factor, reason or state.governor_reason, kind)

    def _aimd(self, sample: Sample, state: RoomState) -> tuple[float | None, str, Kind]:
        ceiling = state.rate
        current = state.effective_rate
        trouble = self._trouble(sample.p95_ms, sample.error_rate)
        if trouble:
            if sample.t - self._last_decrease < WINDOW_S:
                return current, "", "lowered"  # the last cut has not shown its effect yet
            self._last_decrease = sample.t
            lowered = max(ceiling * FLOOR_SHARE, (current or ceiling) * DECREASE)
            return round(lowered, 4), f"lowered: {trouble}", "lowered"
        if current is None:
            return None, "", "released"
        if current >= ceiling:
            return None, "back at the admin's rate", "released"
        if sample.t - self._last_increase < INCREASE_EVERY_S:
            return current, "", "raised"
        self._last_increase = sample.t
        raised = current + ceiling * INCREASE_SHARE
        if raised >= ceiling:
            return None, "backend healthy: back at the admin's rate", "released"
        return round(raised, 4), "backend healthy: raising step by step", "raised"

    def _trouble(
        self, p95: float | None, errors: float | None, knee_ms: float | None = None
    ) -> str:
        """Why the backend is struggling, in words; "" when it is not."""
        if p95 is not None and 0 < self.p95_target_ms < p95:
            return f"backend p95 {p95:.0f} ms over the {self.p95_target_ms:g} ms target"
        if p95 is not None and knee_ms is not None and p95 > knee_ms:
            return f"backend p95 {p95:.0f} ms, over {KNEE_FACTOR:g}x its healthy p95"
        if errors is not None and errors > self.error_target:
            return f"backend errors {errors:.0%} over the {self.error_target:.0%} target"
        return ""

    def _remember(self, sample: Sample) -> None:
        self._history.append(sample)
        while self._history and sample.t - self._history[0].t > NOSHOW_WINDOW_S + NOSHOW_LAG_S:
            self._history.popleft()

    def _noshow_factor(self, sample: Sample, state: RoomState) -> float | None:
        if not self.noshow_compensation or len(self._history) < 2:
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

    # -- the auto rate: a search for the backend's capacity ---------------------------

    def _search(self, sample: Sample, state: RoomState) -> Decision | None:
        search = state.search
        baseline = self._baseline(sample, search)
        knee_ms = max(KNEE_FACTOR * baseline, KNEE_FLOOR_MS) if baseline is not None else None
        # Lookups' latency and errors: what queues in front of a site's workers.
        p95 = sample.lookups_p95_ms
        trouble = self._trouble(p95, sample.lookups_error_rate, knee_ms)
        if p95 is not None and not trouble:
            self._healthy.append((sample.t, p95))
        recent = sample.lookups_recent_p95_ms
        if trouble and recent is not None:
            # The window's p95 remembers a queue for five seconds after it is gone;
            # the newest second shows it gone (or still there) at once. A drain
            # then ends seconds sooner (at 70 % of the capacity and below: the
            # 60 s goal hung on them), and a hold after it is not cut for the
            # queue it has just worked off.
            trouble = self._trouble(recent, sample.lookups_error_rate, knee_ms)
        # Requests per admission are learnt where admission held still for a whole
        # settle period: during a ramp the backend's load lags the rate.
        steady = sample.t - state.governor_at >= SETTLE_S
        per_admission = self._per_admission(sample, search, steady=steady)
        search = dataclasses.replace(search, per_admission=per_admission, baseline_ms=baseline)
        rate = state.effective_rate
        if not state.search.phase or rate is None:
            return self._start(sample, state, search)
        if state.held or state.mode == "pass-through":
            return None  # nobody is admitted by the pacer: nothing to learn
        most = state.rate
        if search.phase == "drain":
            return self._drain(sample, state, search, trouble)
        if trouble:
            return self._knee(sample, state, search, trouble)
        if rate > most:
            why = f"auto: held at the admin's rate, {most:g}/s"
            return _auto(most, why, "ceiling", search)
        throughput = _served(sample)
        if (
            state.governor_kind == "probe"
            and search.capacity
            and sample.t - state.governor_at >= EFFECT_LAG_S
            and _full(sample, search.capacity)
        ):
            # Sent more than it took before, it answers no more: it is full, and its
            # latency would say so only once a queue has grown (at once, not a whole
            # settle period after the probe: by then a queue has, and a site with a
            # small backlog answers 502s). Back to the hold.
            why = (
                f"auto: the backend answered no more than the {search.capacity:.0f} "
                f"lookups/s found at {rate:g}/s ({throughput:.0f} lookups/s)"
            )
            return _back_to_hold(sample, search, most, why)
        if p95 is None or sample.t - state.governor_at < SETTLE_S:
            return None  # no news, or the last change has not shown its whole effect
        if search.phase == "hold" and sample.t - search.since < PROBE_AFTER_S:
            # Holding. A knee may come before admission ever held still long enough to
            # measure the lookups each brings: hold by the measurement once it does.
            if search.capacity and search.per_admission:
                held = HOLD_SHARE * search.capacity / search.per_admission
                # No bigger a step than a climb's, however far off the estimate was.
                held = min(most, _round(min(rate * CLIMB, held)))
                if abs(held - rate) > 0.1 * rate:
                    why = (
                        f"auto: each admission brings {search.per_admission:.2g} "
                        f"lookups: holding at {held:g}/s, {HOLD_SHARE:.0%} of about "
                        f"{search.capacity:.0f} lookups/s"
                    )
                    return _auto(held, why, "hold", search)
            return None
        if not self._busy(sample, rate):
            # Admission was not what limited the backend's load: an empty line says
            # nothing, but a full concurrency cap stops the search, so say so.
            if sample.waiting and sample.active >= CAP_FULL_SHARE * sample.max_active:
                why = (
                    f"auto: {sample.max_active} active passes, the cap, hold admission "
                    f"below {rate:g}/s: raise max active passes to let the search go on"
                )
                if why != state.governor_reason:
                    return Decision(rate, None, why, None, search)
            return None
        healthy = (
            f"auto: backend healthy at {rate:g}/s ({throughput:.0f} lookups/s, p95 {p95:.0f} ms)"
        )
        if search.phase == "climb":
            raised = _round(rate * CLIMB)
            if raised >= most:
                if rate >= most:
                    return None
                return _auto(most, f"{healthy}: at the admin's rate, {most:g}/s", "ceiling", search)
            return _auto(raised, f"{healthy}: raising to {raised:g}/s", "climb", search)
        # Held long enough: probe upward in small steps, one per SETTLE_S.
        known = search.capacity or 0.0
        per = _per(search)
        if rate * per > known and _full(sample, known):
            # Past the capacity found, it answered no more: a step further would
            # be a step past it. Back to the hold.
            why = f"{healthy}, but no more than the {known:.0f} lookups/s found"
            return _back_to_hold(sample, search, most, why)
        capacity = max(known, throughput)
        step = PROBE_SHARE * capacity / per
        raised = _round(rate + max(step, 0.01))
        probed = dataclasses.replace(search, capacity=capacity)
        if raised >= most:
            if rate >= most:
                return None
            return _auto(most, f"{healthy}: at the admin's rate, {most:g}/s", "ceiling", probed)
        return _auto(raised, f"{healthy}: probing {raised:g}/s for more capacity", "probe", probed)

    def _start(self, sample: Sample, state: RoomState, search: Search) -> Decision:
        most = state.rate
        if search.capacity and search.per_admission:
            held = min(most, _round(HOLD_SHARE * search.capacity / search.per_admission))
            why = (
                f"auto: starting at {held:g}/s, {HOLD_SHARE:.0%} of the "
                f"{search.capacity:.0f} lookups/s the backend took before"
            )
            search = dataclasses.replace(search, phase="hold", since=sample.t)
            return _auto(held, why, "start", search)
        # From the admissions in force (a fixed rate switched to auto), else low.
        recent = _mean(x.admitted_per_s for x in self._last(sample, WINDOW_S))
        low = min(START_MAX, max(AUTO_START_RATE, START_SHARE * most))
        start = min(most, _round(max(low, recent)))
        why = f"auto: starting at {start:g}/s, raising while the backend stays healthy"
        search = dataclasses.replace(search, phase="climb", since=sample.t)
        return _auto(start, why, "start", search)

    def _knee(self, sample: Sample, state: RoomState, search: Search, trouble: str) -> Decision:
        """Past the backend's capacity: cut admission so that its queue drains."""
        rate = state.effective_rate or state.rate
        per = _per(search)
        # The newest second says what it answers now; at a few lookups a second one
        # second is noise, and a lull in it would size the drain by nothing.
        served = max(_now_served(sample), _served(sample))
        if search.capacity and not _falling_behind(sample):
            # It kept up with what it was sent: a burst at the hold, which says
            # nothing of what it can do; sized by what it answered (the hold's
            # 85 %), the drain would go to 65 % of its capacity.
            served = max(served, search.capacity)
        # How far past the capacity admission went sets the depth of the drain.
        over = rate * per / served if served > 0 else 2.0
        share = min(DRAIN_SHALLOWEST, max(DRAIN_DEEPEST, 1 - DRAIN_SLOPE * (over - 1)))
        drained = _round(max(min(AUTO_FLOOR, state.rate), min(rate, share * served / per)))
        why = (
            f"auto: {trouble} at {rate:g}/s; it answered {served:.0f} lookups/s: "
            f"admitting {drained:g}/s while it catches up"
        )
        drain = dataclasses.replace(search, phase="drain", since=sample.t, peak=None)
        self._saturated = []
        self._fell_behind = _falling_behind(sample)
        return _auto(drained, why, "knee", drain)

    def _drain(
        self, sample: Sample, state: RoomState, search: Search, trouble: str
    ) -> Decision | None:
        """Draining: measure the capacity (a backend working off a queue answers at
        its capacity, and every second measured now is past the knee: the sample at
        the knee may hold a second from before a slowdown), then hold below it."""
        rate = state.effective_rate or state.rate
        per = _per(search)
        since = sample.t - search.since
        if trouble:
            served = _now_served(sample)
            if _bottleneck(sample):
                self._saturated.append(served)
                if served > (search.peak or 0.0):
                    search = dataclasses.replace(search, peak=served)
            peak = search.peak or 0.0
            behind = _falling_behind(sample)
            self._fell_behind = self._fell_behind or behind
            if behind and rate * per >= peak and since < DRAIN_MAX_S:
                # Slower than it seemed at the knee: drain below what it answers now.
                again = _round(max(min(AUTO_FLOOR, state.rate), DRAIN_DEEPEST * peak / per))
                if again < rate:
                    why = (
                        f"auto: {trouble}; it answers only {peak:.0f} lookups/s: "
                        f"admitting {again:g}/s while it catches up"
                    )
                    return _auto(again, why, "knee", search)
            if since < DRAIN_MAX_S:
                # Recorded, so that a new lease holder carries on from it.
                grown = search.peak != state.search.peak
                return Decision(rate, None, state.governor_reason, None, search) if grown else None
            again = _round(max(min(AUTO_FLOOR, state.rate), rate * DECREASE))
            why = f"auto: {trouble} {since:.0f} s after the cut: admitting {again:g}/s"
            return _auto(again, why, "knee", dataclasses.replace(search, since=sample.t))
        if since < EFFECT_LAG_S:
            return None
        # No second of trouble after the knee: it was a blip; keep what was known.
        peak = search.peak or search.capacity or _served(sample)
        if search.peak:
            # The seconds it answered near its best were saturated ones: their mean,
            # since the best of several noisy seconds is a few per cent too high (a
            # new lease holder, with none of them in memory, has the best).
            near = [x for x in self._saturated if x >= SATURATED_SHARE * search.peak]
            peak = _mean(near) if near else search.peak
        before = search.capacity
        if before and peak < before and not self._fell_behind:
            # It never fell behind what it was sent: a burst slowed it, its capacity
            # did not change; a slower backend falls behind at once.
            held = min(state.rate, _round(HOLD_SHARE * before / per))
            why = (
                f"auto: a burst, not a smaller capacity (it kept up with what it was "
                f"sent): holding at {held:g}/s"
            )
            found = dataclasses.replace(search, phase="hold", since=sample.t, peak=None)
            return _auto(held, why, "hold", found)
        if before and peak < RELEARN_SHARE * before:
            # Errors or an outage, not a capacity: search again from half the old one.
            restart = min(state.rate, _round(max(rate, 0.5 * before / per)))
            why = (
                f"auto: backend healthy again, but it answered only {peak:.0f} lookups/s: "
                f"searching again from {restart:g}/s"
            )
            search = dataclasses.replace(search, phase="climb", since=sample.t, peak=None)
            return _auto(restart, why, "climb", search)
        held = min(state.rate, _round(max(AUTO_FLOOR, HOLD_SHARE * peak / per)))
        why = (
            f"auto: found about {peak:.0f} lookups/s; holding at {held:g}/s "
            f"({HOLD_SHARE:.0%} of it; lookups per admission: {per:.2g})"
        )
        found = dataclasses.replace(search, phase="hold", since=sample.t, capacity=peak, peak=None)
        return _auto(held, why, "hold", found)

    def _baseline(self, sample: Sample, search: Search) -> float | None:
        """The backend's healthy p95: the lowest healthy one of the last BASELINE_S;
        none healthy that long, the lowest of all (the backend's new normal)."""
        while self._healthy and sample.t - self._healthy[0][0] > BASELINE_S:
            self._healthy.popleft()
        if self._healthy:
            return min(ms for _, ms in self._healthy)
        seen = [x.lookups_p95_ms for x in self._last(sample, BASELINE_S)]
        known = [ms for ms in seen if ms is not None]
        if known and sample.t - self._history[0].t >= BASELINE_S:
            return min(known)
        return search.baseline_ms

    def _per_admission(self, sample: Sample, search: Search, *, steady: bool) -> float | None:
        """Lookups per admission: the lookups sent in the window against
        the admissions one effect lag earlier, summed over steady samples with older
        ones fading (so a window of many admissions weighs more than one of few).
        Any sample's ratio is kept as a rough one, for a knee before the first
        steady sample."""
        start, end = sample.t - WINDOW_S - EFFECT_LAG_S, sample.t - EFFECT_LAG_S
        earlier = [x.admitted_per_s for x in self._history if start < x.t <= end]
        admitted = _mean(earlier)
        # Sent, not answered: a backend past its capacity answers fewer than it is
        # sent, and one working off a queue more.
        sent = sample.lookups_sent_per_s
        if not steady or len(earlier) < WINDOW_S - 1 or admitted < 1 or sent <= 0:
            return search.per_admission
        lookups, admissions = self._per_admission_sums
        if not admissions and search.per_admission:
            # A new lease holder: what the last one measured, worth a few windows.
            admissions = PER_ADMISSION_SEED
            lookups = search.per_admission * admissions
        lookups = lookups * PER_ADMISSION_FADE + sent * WINDOW_S
        admissions = admissions * PER_ADMISSION_FADE + admitted * WINDOW_S
        self._per_admission_sums = (lookups, admissions)
        if admissions < PER_ADMISSION_SEED:
            return search.per_admission  # too few yet: 30 admissions say +-20 %
        low, high = PER_ADMISSION_RANGE
        return round(min(high, max(low, lookups / admissions)), 3)

    def _busy(self, sample: Sample, rate: float) -> bool:
        admitted = _mean(x.admitted_per_s for x in self._last(sample, WINDOW_S))
        return admitted >= BUSY_SHARE * rate

    def _last(self, sample: Sample, seconds: float) -> list[Sample]:
        return [x for x in self._history if sample.t - x.t < seconds]


def _auto(rate: float, reason: str, kind: Kind, search: Search) -> Decision:
    return Decision(rate, None, reason, kind, search)


def _back_to_hold(sample: Sample, search: Search, most: float, why: str) -> Decision:
    """Full at the capacity found: back to the hold below it, the hold's clock
    starting again."""
    known = search.capacity or 0.0
    held = min(most, _round(HOLD_SHARE * known / _per(search)))
    return _auto(
        held, f"{why}: holding at {held:g}/s", "hold", dataclasses.replace(search, since=sample.t)
    )


def _per(search: Search) -> float:
    return search.per_admission or PER_ADMISSION_GUESS


def _served(sample: Sample) -> float:
    """Lookups a second the backend answered well in the sample's window."""
    return sample.lookups_per_s


def _now_served(sample: Sample) -> float:
    """Lookups the backend answered well in the newest whole second."""
    return sample.lookups_recent_per_s


def _falling_behind(sample: Sample) -> bool:
    """Sent more lookups than it answered well in the window: its queue grew."""
    return sample.lookups_sent_per_s > BEHIND_SHARE * sample.lookups_per_s


def _full(sample: Sample, known: float) -> bool:
    """It answered no more than the capacity found, and less than it was sent: its
    queue grows. Both halves are needed at a few dozen lookups a second, where a
    window's count is +-7 %: a backend that grew may answer less than found in one
    window, but it answers what it is sent; one that is full may be sent less than
    the rate sends in one window, but never answers more than it can."""
    margin = 1 + PROBE_SHARE / 2
    answered = sample.lookups_per_s
    return answered < margin * known and sample.lookups_sent_per_s > margin * answered


def _bottleneck(sample: Sample) -> bool:
    """The backend, not admission, set what it answered in the window: its queue grew
    (sent more than it answered) or it worked one off (answered more than sent).
    A slow second in which it answered what it was sent says nothing of its
    capacity (a gateway that stalls for a moment on a busy machine slows every
    answer): counted, a drain's own rate would become the capacity."""
    sent, answered = sample.lookups_sent_per_s, sample.lookups_per_s
    return sent > BEHIND_SHARE * answered or answered > BEHIND_SHARE * sent


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def _round(rate: float) -> float:
    """Rates as an admin reads them: three significant figures."""
    return float(f"{rate:.3g}")


def _factor_or_none(factor: float) -> float | None:
    return factor if factor > 1.01 else None


def _rate_text(effective: float | None, rate: float, auto: bool) -> str:
    if auto:
        return f"{effective:g}/s (auto, at most {rate:g}/s)"
    if effective is None:
        return f"{rate:g}/s (the admin's)"
    return f"{effective:g}/s of the admin's {rate:g}/s"
