"""``/metrics``: the room in the Prometheus text format, the same from every worker.

A gateway runs several worker processes behind one port, and a scrape reaches
only one of them; so nothing here is per process. The line's figures come from
the worker's view of Redis, and the counters (forwarded requests, their latency
histogram, errors by kind, rejected cookies) from the room-wide hash that every
worker adds to twice a second (``telemetry.BackendStats``). One Redis read per
scrape.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from waitroom.line.keys import RoomKeys
from waitroom.line.state import RoomState
from waitroom.line.store import Client
from waitroom.room.snapshot import RoomView
from waitroom.room.telemetry import BUCKETS_MS

__all__ = ["CONTENT_TYPE_LATEST", "render_metrics"]


async def render_metrics(client: Client, keys: RoomKeys, view: RoomView) -> bytes:
    """The room's figures: ``view``'s line, and the room-wide counters in Redis."""
    try:
        raw = await client.hgetall(keys.metrics)
        counters = {_text(k): int(v) for k, v in raw.items()}
    except Exception:
        counters = {}  # the line's figures below still say Redis is down
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RoomCollector(view, counters))
    return generate_latest(registry)


class _RoomCollector:
    def __init__(self, view: RoomView, counters: dict[str, int]) -> None:
        self.view = view
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        view = self.view
        s = view.state
        yield _gauge("waitroom_redis_up", "1 when this worker reached Redis lately", view.healthy)
        if s is not None:
            yield _gauge("waitroom_waiting", "people in line now", s.waiting)
            yield _gauge("waitroom_frontier", "highest place admitted", s.frontier)
            yield _gauge("waitroom_last_position", "last position issued", s.seq)
            yield _gauge("waitroom_active_passes", "admissions counted as active", s.active)
            yield _gauge("waitroom_max_active", "cap on active admissions", s.max_active)
            yield _gauge("waitroom_rate_ceiling", "admin's admission rate, per second", s.rate)
            yield _gauge(
                "waitroom_admission_rate",
                "admission rate now (governed, no-shows made up), per second",
                s.admission_rate,
            )
            yield _gauge(
                "waitroom_noshow_factor", "admission speed-up for no-shows", s.noshow_factor
            )
            yield from self._governor(s)
            yield _gauge("waitroom_held", "1 while nobody is admitted (paused etc.)", s.held)
            yield _gauge(
                "waitroom_admitted_per_second",
                "measured admissions per second (last 30 s)",
                view.line_rate(),
            )
            yield _counter("waitroom_admitted", "admissions since the line began", s.admitted)
            yield _counter("waitroom_shown", "admitted students who came for a pass", s.shown)
        yield from self._backend()
        yield _counter(
            "waitroom_redis_unreplicated_writes",
            "joins, trades and admin changes answered with no replica online to copy them",
            self.counters.get("redis_unreplicated", 0),
        )
        yield from self._labelled("rejected:", "waitroom_cookies_rejected", ("cookie", "reason"))
        yield from self._labelled("store_error:", "waitroom_store_errors", ("operation",))
        yield from self._labelled("limited:", "waitroom_limited", ("limit",))
        # Joins, trades and lookup counts go to Redis in batches (waitroom.line.coalesce):
        # calls over batches is what coalescing saves.
        yield from self._labelled("redis_batches:", "waitroom_redis_batches", ("step",))
        yield from self._labelled("redis_batched:", "waitroom_redis_batched_calls", ("step",))

    def _governor(self, s: RoomState) -> Iterator[Metric]:
        """The rate's mode, the rate the governor set, what the auto rate found, and
        the kind of each change (the words are on the admin page; labels stay few)."""
        mode = GaugeMetricFamily(
            "waitroom_rate_mode",
            "1 for the rate's mode: fixed, or auto (searched)",
            labels=["mode"],
        )
        mode.add_metric(["auto" if s.rate_auto else "fixed"], 1)
        yield mode
        yield _gauge(
            "waitroom_effective_rate",
            "admission rate the governor set (the admin's when it holds none), per second",
            s.target_rate,
        )
        if s.search.capacity is not None:
            yield _gauge(
                "waitroom_discovered_capacity_per_second",
                "lookups a second the auto rate found the backend answers when saturated",
                s.search.capacity,
            )
        if s.governor_kind:
            last = GaugeMetricFamily(
                "waitroom_rate_last_change_timestamp_seconds",
                "when the governor last changed the rate, labelled with the kind of change",
                labels=["kind"],
            )
            last.add_metric([s.governor_kind], s.governor_at)
            yield last
        yield from self._labelled("rate_change:", "waitroom_rate_changes", ("kind",))

    def _backend(self) -> Iterator[Metric]:
        c = self.counters
        requests = c.get("backend_requests", 0)
        yield _counter("waitroom_backend_requests", "requests forwarded to the backend", requests)
        errors = CounterMetricFamily(
            "waitroom_backend_errors",
            "forwarded requests that failed, by kind",
            labels=["kind"],
        )
        for name, n in sorted(c.items()):
            if name.startswith("backend_error:"):
                errors.add_metric([name.split(":", 1)[1]], n)
        yield errors
        buckets: list[tuple[str, float]] = []
        seen = 0
        for i, bound in enumerate(BUCKETS_MS):
            seen += c.get(f"backend_bucket:{i}", 0)
            buckets.append((repr(bound / 1000), seen))
        buckets.append(("+Inf", requests))
        yield HistogramMetricFamily(
            "waitroom_backend_latency_seconds",
            "backend answer time as the gateways saw it",
            buckets=buckets,
            sum_value=c.get("backend_us", 0) / 1_000_000,
        )

    def _labelled(self, prefix: str, name: str, labels: tuple[str, ...]) -> Iterator[Metric]:
        family = CounterMetricFamily(name, name.replace("_", " "), labels=list(labels))
        for key, n in sorted(self.counters.items()):
            if key.startswith(prefix):
                family.add_metric(key[len(prefix) :].split(":", len(labels) - 1), n)
        yield family


def _gauge(name: str, text: str, value: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=float(value))


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
