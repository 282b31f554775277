"""What the gateway sees of the line and the backend, shared through Redis.

Each worker counts its forwarded requests per wall-clock second (when sent, and
when answered with their latency bucket and errors) and adds them to one Redis
hash per second every half second (``BackendStats``): one pipelined write per
worker, however busy. Once a second the pacer's lease holder turns the room's
state and the last few seconds of those counters into one sample (``Sampler``):
the line, admissions and arrivals per second, and the backend's load, latency and
error rate as the gateways saw them. The last 15 minutes of samples are kept in a
capped list for the admin's live chart, and the newest is what admission control
reacts to.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from waitroom.line.keys import RoomKeys
from waitroom.line.state import METRICS_TTL_S, RoomState, Tick
from waitroom.line.store import Client, guard
from waitroom.shared.loops import every

log = logging.getLogger(__name__)

# Upper bounds (ms) of the latency buckets; one more bucket holds everything slower.
BUCKETS_MS = (2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
# Per-second counters outlive the window the sampler reads by a wide margin.
COUNTER_TTL_S = 120
# Latency and errors are judged over this many complete seconds.
WINDOW_S = 5
SERIES_LEN = 15 * 60  # one sample a second: 15 minutes
# Traffic this long without a lookup: an origin whose lookup paths match nothing, so
# every request it is sent stands for its lookups (a window without one, as pages
# come a second before lookups, is no such origin).
LOOKUPS_ABSENT_S = 60
SERIES_TTL_S = 3600
# Fewer lookups than this in a second make its p95 noise (at 20 it is about the
# slowest one; in the simulation 20 re-learnt a slowed backend low once in eight
# seeds, 50 left a 40 lookups/s backend to the window alone and held it at 59 %).
RECENT_MIN_LOOKUPS = 30
FLUSH_INTERVAL_S = 0.5


class BackendStats:
    """One worker's forwarded requests (per second) and event counters (since the
    room began), kept in memory until flushed to Redis."""

    def __init__(self) -> None:
        self._pending: dict[int, dict[str, int]] = {}
        self._totals: dict[str, int] = {}

    def record(
        self,
        seconds: float,
        ok: bool,
        kind: str = "",
        now: float | None = None,
        *,
        lookup: bool = False,
    ) -> None:
        """One forwarded request answered (``lookup``: to a lookup path, the work a
        result site is sized by); ``now`` replaces the clock, for simulations."""
        counts = self._pending.setdefault(int(time.time() if now is None else now), {})
        counts["n"] = counts.get("n", 0) + 1
        if lookup:
            counts["ln"] = counts.get("ln", 0) + 1
        if not ok:
            counts["err"] = counts.get("err", 0) + 1
            if lookup:
                counts["lerr"] = counts.get("lerr", 0) + 1
            self.count(f"backend_error:{kind or 'unknown'}")
        bucket = _bucket(seconds * 1000)
        counts[f"b{bucket}"] = counts.get(f"b{bucket}", 0) + 1
        if lookup:
            counts[f"lb{bucket}"] = counts.get(f"lb{bucket}", 0) + 1
        self.count("backend_requests")
        self.count(f"backend_bucket:{bucket}")
        self.count("backend_us", int(seconds * 1_000_000))

    def sent(self, now: float | None = None, *, lookup: bool = False) -> None:
        """One request on its way to the backend: what it is sent, which a backend
        past its capacity answers only later (``now``: for simulations)."""
        counts = self._pending.setdefault(int(time.time() if now is None else now), {})
        field = "lsent" if lookup else "sent"
        counts[field] = counts.get(field, 0) + 1

    def count(self, name: str, n: int = 1) -> None:
        """Add to a room-wide counter (``name`` from a fixed set: keys stay bounded)."""
        self._totals[name] = self._totals.get(name, 0) + n

    async def flush(self, client: Client, keys: RoomKeys) -> None:
        if not self._pending and not self._totals:
            return
        pending, self._pending = self._pending, {}
        totals, self._totals = self._totals, {}
        try:
            async with client.pipeline(transaction=False) as pipe:
                for second, counts in pending.items():
                    key = keys.backend(second)
                    for field, n in counts.items():
                        pipe.hincrby(key, field, n)
                    pipe.expire(key, COUNTER_TTL_S)
                for name, n in totals.items():
                    pipe.hincrby(keys.metrics, name, n)
                if totals:
                    pipe.expire(keys.metrics, METRICS_TTL_S)
                await pipe.execute()
        except Exception as exc:
            # Counts lost in an outage only blur the chart; never hold them forever.
            log.debug("waitroom: backend counters not flushed: %s", exc)

    async def run(self, client: Client, keys: RoomKeys) -> None:
        """Flush every ``FLUSH_INTERVAL_S`` until cancelled, the first after one."""
        await asyncio.sleep(FLUSH_INTERVAL_S)
        await every(
            FLUSH_INTERVAL_S, lambda: self.flush(client, keys), what="flushing counters", logger=log
        )


@dataclass(frozen=True)
class Sample:
    t: float  # unix seconds
    waiting: int
    seq: int
    frontier: int
    admitted_per_s: float
    arrivals_per_s: float
    target_rate: float
    active: int
    max_active: int
    backend_per_s: float
    p50_ms: float | None
    p95_ms: float | None
    error_rate: float | None
    admitted_total: int = 0
    shown_total: int = 0
    effective_rate: float | None = None
    noshow_factor: float = 1.0
    # Lookups, the work a result site is sized by (its pages cost it little; every
    # forwarded request when the window had no lookup, an origin whose lookup paths
    # we do not know): answered well a second; answered well in the newest whole
    # second (the window's newest may still wait for a flush), which while the
    # backend is saturated says what it can do now, where the window's mean mixes in
    # seconds from before; and sent a second, answered or not yet: its offered load.
    lookups_per_s: float = 0.0
    lookups_recent_per_s: float = 0.0
    lookups_sent_per_s: float = 0.0
    # The lookups' own p95 and error share: pages answered at once say nothing of
    # the queue in front of the site's workers.
    lookups_p95_ms: float | None = None
    lookups_error_rate: float | None = None
    # The lookups' p95 in the newest whole second (None under RECENT_MIN_LOOKUPS):
    # a queue worked off shows there seconds before the window forgets it.
    lookups_recent_p95_ms: float | None = None
    # What the pacer admitted at: the governed rate, no-shows made up (the auto
    # rate's start rate until its first decision).
    admission_rate: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


class Sampler:
    """Run by the pacer's lease holder: one sample of the room a second."""

    def __init__(self, client: Client, keys: RoomKeys) -> None:
        self.client = client
        self.keys = keys
        self.last: Sample | None = None
        # Since when requests went to the backend without one lookup among them.
        self._without_lookups_since: int | None = None

    async def maybe_sample(
        self, tick: Tick, state: RoomState | None, now: float | None = None
    ) -> Sample | None:
        """This second's sample, or None within a second of the last; ``now``
        replaces the clock, for simulations (the governor's tests)."""
        now = time.time() if now is None else now
        last = self.last
        if last is not None and now - last.t < 1.0:
            return None
        try:
            backend, totals = await self._backend_window(int(now))
            span = now - last.t if last is not None else 0.0
            fresh = last is not None and 0 < span < 10 and tick.seq >= last.seq
            sample = Sample(
                t=round(now, 3),
                waiting=max(0, tick.seq - tick.frontier),
                seq=tick.seq,
                frontier=tick.frontier,
                admitted_per_s=round((tick.frontier - last.frontier) / span, 2)
                if fresh and last
                else 0.0,
                arrivals_per_s=round((tick.seq - last.seq) / span, 2) if fresh and last else 0.0,
                target_rate=state.rate if state else 0.0,
                active=tick.active,
                max_active=state.max_active if state else 0,
                **backend,
                **totals,
                effective_rate=state.effective_rate if state else None,
                noshow_factor=state.noshow_factor if state else 1.0,
                admission_rate=round(state.admission_rate, 3) if state else 0.0,
            )
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.lpush(self.keys.series, json.dumps(sample.as_json()))
                pipe.ltrim(self.keys.series, 0, SERIES_LEN - 1)
                pipe.expire(self.keys.series, SERIES_TTL_S)
                await pipe.execute()
        except Exception as exc:
            log.debug("waitroom: no sample this second: %s", exc)
            return None
        self.last = sample
        return sample

    async def _backend_window(self, now_s: int) -> tuple[dict[str, Any], dict[str, int]]:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(self.keys.state, "admitted", "shown")
            for second in range(now_s - WINDOW_S, now_s):
                pipe.hgetall(self.keys.backend(second))
            replies: list[Any] = await pipe.execute()
        admitted, shown = replies[0]
        totals = {"admitted_total": int(admitted or 0), "shown_total": int(shown or 0)}
        seconds = replies[1:]
        if any(b"lsent" in counts or b"ln" in counts for counts in seconds):
            self._without_lookups_since = None
        elif any(counts for counts in seconds) and self._without_lookups_since is None:
            self._without_lookups_since = now_s
        since = self._without_lookups_since
        return _window(seconds, since is not None and now_s - since >= LOOKUPS_ABSENT_S), totals


def _window(seconds: list[dict[bytes, bytes]], everything: bool = False) -> dict[str, Any]:
    """Latency percentiles, error share and throughput over the window's counters
    (one hash a second, oldest first); ``everything``: every request stands for
    lookups (an origin whose lookup paths match nothing)."""
    per_second = [
        {(k.decode() if isinstance(k, bytes) else str(k)): int(v) for k, v in counts.items()}
        for counts in seconds
    ]
    total: dict[str, int] = {}
    for counts in per_second:
        for name, value in counts.items():
            total[name] = total.get(name, 0) + value
    sent = total.get("sent", 0) + total.get("lsent", 0)
    # Lookups' own fields, or every request's for an origin with no lookup to see.
    n_, err_, sent_, b_ = ("n", "err", "", "b") if everything else ("ln", "lerr", "lsent", "lb")
    # The newest second may still wait for a worker's flush; the one before is whole.
    whole = per_second[-2] if len(per_second) >= 2 else {}
    lookups: dict[str, Any] = {
        "lookups_per_s": round((total.get(n_, 0) - total.get(err_, 0)) / WINDOW_S, 2),
        "lookups_recent_per_s": float(whole.get(n_, 0) - whole.get(err_, 0)),
        "lookups_sent_per_s": round((total.get(sent_, 0) if sent_ else sent) / WINDOW_S, 2),
    }
    if whole.get(n_, 0) >= RECENT_MIN_LOOKUPS:
        lookups["lookups_recent_p95_ms"] = percentile(_histogram(whole, b_), 0.95)
    if total.get(n_):
        lookups["lookups_p95_ms"] = percentile(_histogram(total, b_), 0.95)
        lookups["lookups_error_rate"] = round(total.get(err_, 0) / total[n_], 4)
    n = total.get("n", 0)
    if not n:
        empty = {"backend_per_s": 0.0, "p50_ms": None, "p95_ms": None, "error_rate": None}
        return {**empty, **lookups}
    histogram = _histogram(total, "b")
    return {
        "backend_per_s": round(n / WINDOW_S, 2),
        "p50_ms": percentile(histogram, 0.50),
        "p95_ms": percentile(histogram, 0.95),
        "error_rate": round(total.get("err", 0) / n, 4),
        **lookups,
    }


def _histogram(total: dict[str, int], prefix: str) -> list[int]:
    return [total.get(f"{prefix}{i}", 0) for i in range(len(BUCKETS_MS) + 1)]


async def read_series(client: Client, keys: RoomKeys, count: int) -> list[dict[str, Any]]:
    """The newest ``count`` samples, oldest first."""
    raw = await guard(client, "read series", client.lrange(keys.series, 0, count - 1))
    return [json.loads(item) for item in reversed(raw)]


def percentile(histogram: list[int], q: float) -> float:
    """The q-quantile (ms) of bucketed latencies, interpolated within its bucket."""
    total = sum(histogram)
    rank = q * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = BUCKETS_MS[i - 1] if i > 0 else 0
            high = BUCKETS_MS[i] if i < len(BUCKETS_MS) else BUCKETS_MS[-1] * 2
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(BUCKETS_MS[-1])


def _bucket(ms: float) -> int:
    for i, bound in enumerate(BUCKETS_MS):
        if ms <= bound:
            return i
    return len(BUCKETS_MS)


def batch_counter(stats: BackendStats, step: str) -> Callable[[int], None]:
    """What a coalesced Redis step reports per batch (``waitroom.coalesce``): one
    batch, and the calls in it, so /metrics shows what coalescing saves."""

    def count(size: int) -> None:
        stats.count(f"redis_batches:{step}")
        stats.count(f"redis_batched:{step}", size)

    return count
