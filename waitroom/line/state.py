"""The room's line in Redis: join, pace (advance the frontier), read the state.

Each atomic step is one Lua script of the registry (``waitroom.line.scripts``: loaded
once, its reply typed there). Joins, ticket trades and admin changes are answered
only once the replicas asked for hold them (``waitroom.line.store.Replicas``).
redis-py errors become ``StoreUnavailable`` (``waitroom.line.store.guard``) so
callers deal with one exception and the cause stays chained.

``Queue`` reads only ``LineSettings``, which the caller builds
(``waitroom.settings.Settings.line``): this layer never sees the whole settings.

The rate, in few names (people admitted per second unless said otherwise):

- ``rate``: the admin's ceiling (``WAITROOM_RATE``, the config hash's ``rate``; the
  ``waitroom_rate_ceiling`` metric). With ``rate_auto`` on, the most the governor's
  search may reach.
- ``effective_rate``: the governor's decision as stored in the state hash (None:
  none, follow the ceiling); ``AUTO_START_RATE`` stands in for it with the auto
  rate on, until the first decision.
- ``target_rate``: the governed rate, ``min(rate, effective_rate)``: what should
  reach the backend (the ``waitroom_effective_rate`` metric and the admin page's
  "target"; a telemetry sample's ``target_rate`` field is the ceiling, ``rate``,
  a name the admin chart already reads).
- ``noshow_factor``: the governor's make-up for admitted students who never come
  (1..2, applied with a fixed rate only: the auto rate measures what arrives).
- ``admission_rate``: what the pacer admits at, ``target_rate`` times the factor
  (the ``waitroom_admission_rate`` metric).

``admission_rate`` here is the one reference for that formula; ``advance.lua``
works the same out in Redis and ``tests/line/test_scripts.py`` pins the two
together. What the line is *measured* to move at is the room's affair
(``waitroom.room.snapshot.RoomView.line_rate``, the ``waitroom_admitted_per_second``
metric).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from waitroom.line import release
from waitroom.line.keys import RoomKeys
from waitroom.line.scripts import (
    ADVANCE,
    CATCH_UP,
    CONFIGURE,
    GOVERN,
    INIT,
    JOIN,
    SPEND,
    Configured,
    Joined,
    Refused,
    Script,
    Tick,
    text,
)
from waitroom.line.store import Client, Replicas, connect, guard
from waitroom.shared.languages import LANGUAGES
from waitroom.shared.paths import EVERYTHING

__all__ = [
    "Client",
    "Configured",
    "Joined",
    "LineSettings",
    "Queue",
    "Refused",
    "RoomState",
    "Tick",
    "connect",
]

T = TypeVar("T")

# Room-wide counters (the metrics hash) outlive any quiet spell of a result season.
METRICS_TTL_S = 30 * 86400
# With the auto rate on, admission runs at this until the governor's first
# decision: a rate no backend worth the name fails at.
AUTO_START_RATE = 5.0


@dataclass(frozen=True)
class Search:
    """The auto rate's search for the backend's capacity (``waitroom/room/governor.py``),
    kept in the room's state so that every gateway shows it and a new pacer lease
    holder carries on from it."""

    phase: str = ""  # "climb", "drain" or "hold"; "" while the rate is fixed
    since: float = 0.0  # when the phase began, unix seconds
    # Lookups a second it answered when saturated (None: not found yet).
    capacity: float | None = None
    per_admission: float | None = None  # lookups each admission brings
    baseline_ms: float | None = None  # the backend's p95 while it was healthy
    # While it drains after a knee: the most requests per second it answered since.
    peak: float | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Search:
        try:
            raw = json.loads(text)
            return cls(
                phase=str(raw.get("phase") or ""),
                since=float(raw.get("since") or 0.0),
                capacity=_number(raw.get("capacity")),
                per_admission=_number(raw.get("per_admission")),
                baseline_ms=_number(raw.get("baseline_ms")),
                peak=_number(raw.get("peak")),
            )
        except (ValueError, TypeError, AttributeError):
            return cls()  # a search that cannot be read starts again


@dataclass(frozen=True)
class RoomState:
    """What a worker needs to answer waiting students without asking Redis."""

    seq: int
    frontier: int
    epoch: str
    admitted: int
    active: int
    rate: float
    max_active: int
    paused: bool
    mode: str
    pass_ttl_s: int = 600
    banner: tuple[tuple[str, str], ...] = ()  # (language, text), non-empty only
    # A scheduled release (waitroom/line/release.py): its time and seed, and the
    # pre-queue, positions release_base + 1 .. released_n; released_n (the last
    # position issued before the release) is None until the release time passes.
    release_at_ms: int | None = None
    release_seed: str = ""
    release_base: int = 0
    released_n: int | None = None
    # The config hash as read, so a worker can restore it into an emptied Redis.
    config: tuple[tuple[str, str], ...] = ()
    # The governor's decisions (waitroom/room/governor.py): a rate held below ``rate``
    # while the backend struggles (None: at the ceiling), the no-show factor, why.
    effective_rate: float | None = None
    noshow_factor: float = 1.0
    governor_reason: str = ""
    governor_at: float = 0.0
    governor_kind: str = ""  # what kind of change the last one was (bounded names)
    shown: int = 0  # admitted students who came for their pass
    # The origin's paths that wait in line (waitroom/shared/paths.py), as stored.
    protected_paths: str = EVERYTHING
    # The auto rate: the governor searches for the backend's capacity, ``rate``
    # being the most it may reach; no-shows need no factor then, since the search
    # measures what the backend actually receives (advance.lua does the same).
    rate_auto: bool = False
    search: Search = Search()

    @property
    def target_rate(self) -> float:
        """The governed rate, before no-shows are made up (``target_rate``)."""
        return target_rate(self.rate, self.effective_rate, self.rate_auto)

    @property
    def admission_rate(self) -> float:
        """People per second the pacer admits now (``admission_rate``)."""
        return admission_rate(self.rate, self.effective_rate, self.noshow_factor, self.rate_auto)

    @property
    def climbing(self) -> bool:
        """The auto rate is searching upward: admission may grow many times over
        within a minute."""
        return self.rate_auto and self.search.phase in ("", "climb")

    @property
    def waiting(self) -> int:
        return max(0, self.seq - self.frontier)

    @property
    def held(self) -> bool:
        """Nobody is being admitted: paused, everyone asked to wait, or before release."""
        return self.paused or self.mode == "queue-all" or self.before_release

    @property
    def before_release(self) -> bool:
        return self.release_at_ms is not None and self.released_n is None

    def banner_text(self, lang: str) -> str:
        texts = dict(self.banner)
        return texts.get(lang) or texts.get("en", "")


def target_rate(rate: float, effective_rate: float | None, rate_auto: bool) -> float:
    """The governed rate: the governor's when below the admin's ceiling, and with
    the auto rate on ``AUTO_START_RATE`` until the governor's first decision."""
    if effective_rate is None and rate_auto:
        effective_rate = AUTO_START_RATE
    return rate if effective_rate is None else min(rate, effective_rate)


def admission_rate(
    rate: float, effective_rate: float | None, noshow_factor: float, rate_auto: bool
) -> float:
    """What the pacer admits at: the governed rate, no-shows made up (a factor held
    to 1..2) unless the rate is auto, whose search measures what the backend gets.
    The reference for ``advance.lua``'s copy."""
    governed = target_rate(rate, effective_rate, rate_auto)
    if rate_auto:
        return governed
    return governed * min(max(noshow_factor, 1.0), 2.0)


def new_epoch() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True)
class LineSettings:
    """What the line reads of the settings; ``waitroom.settings.Settings.line`` builds
    it. The admin's controls (rate, rate_auto, max_active, pass_ttl_s,
    protected_paths) are only defaults here: the config hash overrides them."""

    room: str
    rate: float
    rate_auto: bool
    max_active: int
    pass_ttl_s: int
    protected_paths: str
    active_window_s: int
    ticket_ttl_s: int
    pacer_lease_s: float
    join_limit: int
    join_window_s: int
    prequeue_join_limit: int
    # Replicas that must hold a join, trade or admin change before it is answered
    # (resolved: 0 for none), and how long to wait for them.
    wait_replicas: int = 0
    wait_timeout_ms: int = 500


class Queue:
    def __init__(self, client: Client, settings: LineSettings) -> None:
        self.client = client
        self.settings = settings
        self.keys = RoomKeys(settings.room)
        self._key_ttl = str(2 * settings.ticket_ttl_s)
        self._active_ms = str(settings.active_window_s * 1000)
        # The writes a failover must not lose: a join (its places), a trade (its
        # marker), an admin's change. None when no replica is asked for.
        self.replicas = (
            Replicas(settings.wait_replicas, settings.wait_timeout_ms)
            if settings.wait_replicas
            else None
        )

    async def _run(
        self, script: Script[T], keys: Sequence[str], args: Sequence[Any], *, durable: bool = False
    ) -> T:
        replicas = self.replicas if durable else None
        return await script(self.client, keys, args, replicas=replicas)

    async def join(self, now_ms: int | None = None) -> Joined | None:
        """A new place in line, or None when the room has no state (call ``init``).

        ``now_ms`` replaces Redis's clock, for simulations (``stress simulate``).
        """
        block = await self.join_block([None], now_ms)
        if block is None:
            return None
        joined = block[0]
        assert isinstance(joined, Joined)  # no client, no per-client limit
        return joined

    async def join_block(
        self, clients: Sequence[str | None], now_ms: int | None = None
    ) -> list[Joined | Refused] | None:
        """Consecutive places for a block of arrivals, in the order given; None when
        the room has no state (call ``init``).

        Each arrival names its client for the per-client join limits (None: not
        counted); an arrival over a limit is ``Refused`` and takes no place.
        """
        k = self.keys
        s = self.settings
        limited = s.join_limit > 0 and any(c is not None for c in clients)
        keys = [k.state, k.active, k.config]
        if limited:
            for client in clients:
                who = client if client is not None else "local"
                keys += [k.joins(who), k.prequeue_joins(who)]
        args: list[Any] = [
            s.max_active,
            self._active_ms,
            self._key_ttl,
            _clock(now_ms),
            len(clients),
            s.join_limit if limited else 0,
            s.join_window_s * 1000,
            s.prequeue_join_limit,
        ]
        return await self._run(JOIN, keys, args, durable=True)

    async def tick(self, worker_id: str, now_ms: int | None = None) -> Tick | None:
        """One pacer step; None when the room has no state (call ``init``)."""
        k = self.keys
        s = self.settings
        return await self._run(
            ADVANCE,
            [k.state, k.active, k.config, k.lease],
            [
                worker_id,
                int(s.pacer_lease_s * 1000),
                s.rate,
                s.max_active,
                self._active_ms,
                self._key_ttl,
                _clock(now_ms),
                "1" if s.rate_auto else "0",
                AUTO_START_RATE,
            ],
        )

    async def init(
        self,
        seq: int = 0,
        frontier: int = 0,
        epoch: str | None = None,
        now_ms: int | None = None,
        *,
        released_n: int | None = None,
        config: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        """Create the room's state if missing; True when this call created it.

        ``released_n`` and ``config`` restore what a worker last saw into an emptied
        Redis (the config only if Redis has none).
        """
        args: list[Any] = [seq, frontier, epoch or new_epoch(), self._key_ttl, _clock(now_ms)]
        args.append("" if released_n is None else released_n)
        for field, value in config:
            args += [field, value]
        return await self._run(INIT, [self.keys.state, self.keys.config], args, durable=True)

    async def catch_up(
        self, epoch: str, seq: int, frontier: int, released_n: int | None
    ) -> tuple[int, int]:
        """Move a line that went back (a replica promoted before it had the last
        writes) up to what a worker saw of it: (places skipped, admissions restored)."""
        return await self._run(
            CATCH_UP,
            [self.keys.state],
            [epoch, seq, frontier, "" if released_n is None else released_n],
            durable=True,
        )

    async def configure(
        self, changes: dict[str, str], meta: dict[str, Any], audit_len: int
    ) -> Configured:
        """Apply admin changes (an empty value restores the default) and audit them."""
        k = self.keys
        args: list[Any] = [json.dumps(meta), audit_len, release.new_seed()]
        for field, value in changes.items():
            args += [field, value]
        return await self._run(CONFIGURE, [k.config, k.audit, k.state], args, durable=True)

    async def audit(self, count: int) -> list[dict[str, Any]]:
        entries = await guard(
            self.client, "read audit", self.client.lrange(self.keys.audit, 0, count - 1)
        )
        return [json.loads(e) for e in entries]

    async def spend(self, ticket_id: str) -> bool:
        """Mark a ticket as traded for a pass; False when it already was."""
        return (await self.spend_many([ticket_id]))[0]

    async def spend_many(self, ticket_ids: Sequence[str]) -> list[bool]:
        """``spend`` for many tickets in one round trip, in order."""
        keys = [self.keys.state, *(self.keys.spent(t) for t in ticket_ids)]
        ttl = self.settings.ticket_ttl_s
        return await self._run(SPEND, keys, [ttl], durable=True)

    async def govern(
        self,
        effective_rate: float | None,
        noshow_factor: float | None,
        reason: str,
        at: float,
        *,
        kind: str = "",
        search: Search | None = None,
    ) -> None:
        """Record the governor's rate (None: the admin's) and no-show factor, why, and
        the kind of change (counted room-wide for /metrics); ``search`` replaces the
        auto rate's search when given."""
        k = self.keys
        args: list[str | int] = [
            "" if effective_rate is None else repr(round(effective_rate, 4)),
            "" if noshow_factor is None else repr(round(noshow_factor, 4)),
            reason,
            repr(round(at, 3)),
            "" if search is None else search.to_json(),
            kind,
            METRICS_TTL_S,
        ]
        await self._run(GOVERN, [k.state, k.metrics], args)

    async def read(self) -> RoomState | None:
        """The room's state in one round trip; None when Redis holds none."""
        k = self.keys

        async def fetch() -> list[Any]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(k.state)
                pipe.hgetall(k.config)
                result: list[Any] = await pipe.execute()
                return result

        state, config = await guard(self.client, "read state", fetch())
        if not state:
            return None
        s = {text(a): text(b) for a, b in state.items()}
        c = {text(a): text(b) for a, b in config.items()}
        release_at = c.get("release_at")
        released_n = s.get("released_n")
        return RoomState(
            seq=int(s.get("seq", 0)),
            frontier=int(s.get("frontier", 0)),
            epoch=s.get("epoch", ""),
            admitted=int(s.get("admitted", 0)),
            active=int(s.get("active", 0)),
            rate=float(c.get("rate", self.settings.rate)),
            max_active=int(c.get("max_active", self.settings.max_active)),
            paused=c.get("paused") == "1",
            mode=c.get("mode", "queue"),
            pass_ttl_s=int(c.get("pass_ttl_s", self.settings.pass_ttl_s)),
            banner=tuple(
                (lang, c[f"banner_{lang}"]) for lang in LANGUAGES if c.get(f"banner_{lang}")
            ),
            release_at_ms=int(release_at) if release_at else None,
            release_seed=c.get("release_seed", ""),
            release_base=int(c.get("release_base", 0)),
            released_n=int(released_n) if released_n and release_at else None,
            config=tuple(sorted(c.items())),
            effective_rate=float(s["effective_rate"]) if s.get("effective_rate") else None,
            noshow_factor=float(s.get("noshow_factor") or 1.0),
            governor_reason=s.get("governor_reason", ""),
            governor_at=float(s.get("governor_at") or 0.0),
            governor_kind=s.get("governor_kind", ""),
            shown=int(s.get("shown", 0)),
            protected_paths=c.get("protected_paths", self.settings.protected_paths),
            rate_auto=c.get("rate_auto", "1" if self.settings.rate_auto else "0") == "1",
            search=Search.from_json(s["search"]) if s.get("search") else Search(),
        )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _clock(now_ms: int | None) -> str:
    return "" if now_ms is None else str(now_ms)
