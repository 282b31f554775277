"""The door: who gets in, decided in one place for every request a student makes.

A request carries cookies, a method, a path and what it accepts; the door turns
them into one decision, in this order:

1. a valid pass: forward the request (a lookup is counted against the pass), or
   tell a status check it is admitted;
2. the pass-through mode (the kill switch): forward, no line at all;
3. a valid ticket: where its holder stands; at the front, trade it for a pass once
   and forward this very request;
4. nothing usable: a new place in line (a ``HEAD`` never takes one).

The door sees only requests to the origin's protected paths and the status check
(``waitroom.gateway.lean`` routes the rest); it renders no decision and knows no HTTP. A
bad cookie is never an error: it is a new place with a notice that says why.
Redis is asked only to join, to trade a ticket and to count a lookup, each
coalesced with the other requests of the moment into one script call
(``waitroom.line.coalesce``); a waiting student's visit costs no round trip at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from waitroom.errors import StoreUnavailable
from waitroom.line.coalesce import Coalescer
from waitroom.line.state import Joined, Queue, Refused
from waitroom.room.abuse import Limits, LookupVerdict
from waitroom.room.estimate import Standing, standing, standing_from_basis, status_reply
from waitroom.room.snapshot import RoomView
from waitroom.room.telemetry import BackendStats, batch_counter
from waitroom.room.tickets import Pass, Ticket, TicketRejected, TicketSigner
from waitroom.shared.paths import PathRule

log = logging.getLogger(__name__)

# The gateway's own question "where do I stand?": never forwarded.
STATUS_PATH = "/status"
# A browser may send several ticket cookies (an old one for a parent path, a garbled
# copy): this many are tried, the first valid one wins, and a padded header costs
# no more than this.
MAX_TICKETS = 4
# Seconds before a new arrival refused for want of Redis asks again.
JOIN_RETRY_S = 10


@dataclass(frozen=True, slots=True)
class Visit:
    """What one request carries, as far as the door cares."""

    method: str
    path: str
    tickets: Sequence[str] = ()
    pass_token: str | None = None
    as_json: bool = False
    # The ASGI scope's ``client`` and headers: who counts against the join limit.
    peer: Sequence[Any] | None = None
    headers: Sequence[tuple[bytes, bytes]] = ()

    @property
    def asks_only(self) -> bool:
        """A request that only asks where it stands: it is never forwarded. Every
        other request the door sees is for a protected path of the origin."""
        return self.path == STATUS_PATH


# -- decisions -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Waiting:
    """The student has a place: show it (ready, when at the front and only asking)."""

    ticket: Ticket
    standing: Standing
    notice: str | None = None
    # A new ticket's token: set it, and drop any pass cookie.
    issued: str | None = None


@dataclass(frozen=True, slots=True)
class Admitted:
    """A JSON client (or a status check) learns that it may go on to the lookup."""

    issued: str | None = None  # a new pass's token: set it, and drop the ticket


@dataclass(frozen=True, slots=True)
class Forward:
    """Send this request to the origin."""

    admission: Pass | None  # None in the pass-through mode: nothing to count
    issued: str | None = None  # a new pass's token: set it, and drop the ticket
    verdict: LookupVerdict | None = None  # the lookup counted, to settle afterwards


@dataclass(frozen=True, slots=True)
class NoPlace:
    """A ``HEAD`` from someone without a place: what a ``GET`` would show, no place taken."""

    notice: str | None = None


@dataclass(frozen=True, slots=True)
class LookupLimited:
    """The pass has bought all its lookups: back to the line for more."""

    limit: int


@dataclass(frozen=True, slots=True)
class JoinLimited:
    """Too many new places from this client lately; a place already held is kept."""

    wait_s: int


@dataclass(frozen=True, slots=True)
class Unavailable:
    """No place can be given now (Redis is away): ask again shortly."""

    retry_s: int


Decision = Waiting | Admitted | Forward | NoPlace | LookupLimited | JoinLimited | Unavailable


class Door:
    def __init__(
        self,
        view: RoomView,
        signer: TicketSigner,
        queue: Queue,
        limits: Limits,
        stats: BackendStats,
        *,
        join_limit: int,
        lookups: PathRule,
    ) -> None:
        self.view = view
        self.lookups = lookups
        self.signer = signer
        self.queue = queue
        self.limits = limits
        self.stats = stats
        self.join_limit = join_limit
        self.joins: Coalescer[str | None, Joined | Refused | None] = Coalescer(
            self._join_block, on_batch=batch_counter(stats, "join")
        )
        self.spends: Coalescer[str, bool] = Coalescer(
            self._spend_block, on_batch=batch_counter(stats, "spend")
        )

    # -- the decision ------------------------------------------------------------------

    async def decide(self, visit: Visit) -> Decision:
        notice: str | None = None
        if visit.pass_token:
            try:
                admission = self.signer.read_pass(visit.pass_token)
            except TicketRejected as exc:
                self.stats.count(f"rejected:pass:{exc.reason}")
                notice = "pass_expired" if exc.reason == "expired" else f"rejected_{exc.reason}"
            else:
                return await self._go_on(visit, admission, None)

        state = self.view.state
        if state is not None and state.mode == "pass-through":
            return Admitted() if visit.asks_only else Forward(None)

        ticket, rejected = self.ticket(visit.tickets, state.epoch if state else None)
        if rejected is not None:
            self.stats.count(f"rejected:ticket:{rejected}")
            notice = notice or f"rejected_{rejected}"
        if ticket is not None:
            now = self.standing(ticket)
            if not now.ready or visit.asks_only or visit.method == "HEAD":
                return Waiting(ticket, now, notice)
            traded = await self._trade(visit, ticket)
            if traded is not None:
                return traded
            notice = "rejected_spent"

        if visit.method == "HEAD":
            return NoPlace(notice)
        return await self._join(visit, notice)

    def ticket(self, tokens: Sequence[str], epoch: str | None) -> tuple[Ticket | None, str | None]:
        """The first valid ticket among ``tokens``, else why the first one failed."""
        first_reason: str | None = None
        for token in tokens[:MAX_TICKETS]:
            try:
                return self.signer.read_ticket(token, epoch), None
            except TicketRejected as exc:
                first_reason = first_reason or exc.reason
        return None, first_reason

    def standing(self, ticket: Ticket) -> Standing:
        """Where a ticket's holder stands: from the view's per-refresh basis when it
        can (a refresh of the waiting page), else worked out in full."""
        basis = self.view.status_basis()
        now = standing_from_basis(ticket, basis) if basis is not None else None
        return now if now is not None else standing(ticket, self.view)

    def status(self, tokens: Sequence[str]) -> tuple[bool, int, bytes] | None:
        """A waiting student's status check without a decision: (ready, retry after,
        JSON body), or None when ``decide`` must answer (no valid ticket, no state yet).

        The crowd's commonest request: the same answer as ``decide`` + ``Standing``'s
        JSON (tests/gateway/test_status_path.py holds the two together), from the view's
        per-refresh basis and a byte template.
        """
        basis = self.view.status_basis()
        if basis is None or not tokens:
            return None
        ticket, _ = self.ticket(tokens, basis.state.epoch)
        if ticket is None:
            return None
        reply = status_reply(ticket.position, basis)
        if reply is None:  # the pre-queue before its draw, the pass-through mode
            now = standing(ticket, self.view)
            body = json.dumps(now.as_json(), separators=(",", ":")).encode()
            reply = now.ready, now.retry_after_s, body
        return reply

    async def settle(self, forward: Forward, status: int | None) -> None:
        """After the origin answered (``status``) or failed (None): give back a lookup
        it did not make."""
        if forward.verdict is not None and forward.admission is not None:
            await self.limits.settle(forward.admission.id, forward.verdict, status)

    # -- steps ---------------------------------------------------------------------------

    async def _go_on(self, visit: Visit, admission: Pass, issued: str | None) -> Decision:
        """An admitted student's request: forwarded, counted if it is a lookup."""
        if visit.asks_only:
            return Admitted(issued)
        verdict = None
        if visit.method != "HEAD" and self.lookups.matches(visit.path):
            verdict = await self.limits.take_lookup(admission.id)
            if not verdict.allowed:
                self.stats.count("limited:lookups")
                return LookupLimited(verdict.limit)
        return Forward(admission, issued, verdict)

    async def _trade(self, visit: Visit, ticket: Ticket) -> Decision | None:
        """Trade a ticket at the front for a pass, once; None for a ticket already
        traded (a copy kept or shared after its owner got a pass)."""
        try:
            first = await self.spends.call(ticket.id)
        except StoreUnavailable:
            self.stats.count("store_error:spend")
            # Fail open: a student who reached the front is never stranded by an outage.
            first = True
        if not first:
            return None
        admission, token = self.signer.issue_pass(ticket.id, ticket.epoch)
        return await self._go_on(visit, admission, token)

    async def _join(self, visit: Visit, notice: str | None) -> Decision:
        client = self.limits.client_of(visit.peer, visit.headers) if self.join_limit else None
        try:
            joined = await self.joins.call(client)
        except StoreUnavailable:
            self.stats.count("store_error:join")
            return Unavailable(JOIN_RETRY_S)
        if joined is None:
            return Unavailable(JOIN_RETRY_S)
        if isinstance(joined, Refused):
            self.stats.count("limited:joins")
            return JoinLimited(joined.wait_s)
        ticket, token = self.signer.issue_ticket(joined.position, joined.epoch, joined.frontier)
        if joined.admitted and not visit.asks_only:
            traded = await self._trade(visit, ticket)
            if traded is not None:  # a brand-new ticket is never spent
                return traded
        return Waiting(ticket, self.standing(ticket), notice, issued=token)

    # -- the batches ---------------------------------------------------------------------

    async def _join_block(self, clients: Sequence[str | None]) -> list[Joined | Refused | None]:
        try:
            block = await self.queue.join_block(clients)
            if block is None:
                await self.view.restore()
                block = await self.queue.join_block(clients)
        except StoreUnavailable as exc:
            log.warning("waitroom: %s; %d new arrivals asked to retry", exc, len(clients))
            raise
        if block is None:  # still no line: a worker that remembers it restores it soon
            return [None] * len(clients)
        return list(block)

    async def _spend_block(self, ticket_ids: Sequence[str]) -> list[bool]:
        try:
            return await self.queue.spend_many(ticket_ids)
        except StoreUnavailable as exc:
            log.warning("waitroom: %s; %d tickets traded unchecked", exc, len(ticket_ids))
            raise
