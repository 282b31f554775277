"""Signed cookies: the queue ticket (a place in line) and the admission pass.

Like Quart's session cookies: ``URLSafeTimedSerializer`` with a salt of its own per
kind and a list of keys for rotation (the first configured key signs, all verify).
A ticket carries everything needed to answer a waiting student without Redis:
room, position, join time, id and the line's epoch.

Expiry is checked here rather than by itsdangerous, because itsdangerous rejects a
timestamp from the future as expired: a pass signed by a gateway whose clock runs
two seconds ahead would bounce on every other node. A bounded skew is tolerated.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from itsdangerous import BadData, BadSignature, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode
from itsdangerous.serializer import Serializer

TICKET_COOKIE = "wr_ticket"
PASS_COOKIE = "wr_pass"  # noqa: S105 - a cookie name, not a secret
# Gateways whose clocks disagree by less than this still honour each other's cookies.
CLOCK_SKEW_S = 30
# Verified tokens remembered per worker and kind (about 300 bytes each).
VERIFIED_CACHE_SIZE = 100_000
_T = TypeVar("_T")

Reason = Literal["garbled", "tampered", "foreign", "expired"]


class _Uncompressed(URLSafeTimedSerializer):
    """``URLSafeTimedSerializer`` that never tries zlib on what it signs.

    itsdangerous compresses every payload and keeps the result only when it is
    shorter, which a ticket's or a pass's 60 bytes of JSON never are: the attempt was
    a third of the cost of issuing one, on every new arrival and every trade. The
    tokens are what itsdangerous itself writes for an incompressible payload, so
    any ``URLSafeTimedSerializer`` with the same keys and salt reads them.
    """

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(Serializer.dump_payload(self, obj))


class TicketRejected(Exception):
    """A cookie that cannot be honoured; ``reason`` picks the page the student sees."""

    def __init__(self, kind: str, reason: Reason, detail: str = "") -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"{kind} rejected ({reason}){': ' + detail if detail else ''}")


@dataclass(frozen=True)
class Ticket:
    room: str
    position: int
    joined_at: int  # unix seconds
    id: str
    epoch: str
    # Where the frontier stood at join: the start of this student's progress bar.
    joined_frontier: int


@dataclass(frozen=True)
class Pass:
    room: str
    id: str
    epoch: str
    issued_at: int  # unix seconds


@dataclass(frozen=True, slots=True)
class SignerSettings:
    """What tickets and passes are signed with (``waitroom.gateway.services`` builds it)."""

    room: str
    secret_keys: tuple[str, ...]  # newest first
    ticket_ttl_s: int
    # The pass lifetime configured; an admin may change it (``TicketSigner``'s pass_ttl).
    pass_ttl_s: int


class TicketSigner:
    def __init__(self, settings: SignerSettings, pass_ttl: Callable[[], int] | None = None) -> None:
        self.room = settings.room
        self.ticket_ttl_s = settings.ticket_ttl_s
        # The pass lifetime is an admin control: judge every pass by the current one.
        self.pass_ttl: Callable[[], int] = pass_ttl or (lambda: settings.pass_ttl_s)
        # itsdangerous signs with the last key of the list; settings list newest first.
        keys = list(reversed(settings.secret_keys))
        self._tickets = _Uncompressed(keys, salt="waitroom.ticket")
        self._passes = _Uncompressed(keys, salt="waitroom.pass")
        # token -> (what it says, None if unreadable; signed_at; payload), per kind, of
        # tokens whose signature checked out. A waiting student sends the same ticket
        # on every poll; checking the HMAC again was two thirds of a status check, and
        # making the Ticket again a tenth. Expiry, room and epoch are still judged on
        # every use.
        self._tickets_seen: dict[str, tuple[Ticket | None, int, Any]] = {}
        self._passes_seen: dict[str, tuple[Pass | None, int, Any]] = {}

    def issue_ticket(self, position: int, epoch: str, frontier: int) -> tuple[Ticket, str]:
        ticket = Ticket(
            self.room, position, int(time.time()), secrets.token_urlsafe(9), epoch, frontier
        )
        token = self._tickets.dumps([ticket.room, position, ticket.id, epoch, frontier])
        return ticket, token

    def read_ticket(self, token: str, epoch: str | None = None) -> Ticket:
        hit = self._tickets_seen.get(token)
        if hit is not None:
            # The common case, every poll of a waiting student: judged inline.
            ticket, signed_at, _ = hit
            if (
                ticket is not None
                and -CLOCK_SKEW_S <= time.time() - signed_at <= self.ticket_ttl_s
                and ticket.room == self.room
                and (epoch is None or ticket.epoch == epoch)
            ):
                return ticket
        # Anything else is judged in order, to give the right reason.
        ticket = self._load(
            self._tickets, "ticket", token, self.ticket_ttl_s, self._tickets_seen, _ticket
        )
        self._check_room("ticket", ticket.room, ticket.epoch, epoch)
        return ticket

    def issue_pass(self, ticket_id: str, epoch: str) -> tuple[Pass, str]:
        admission = Pass(self.room, ticket_id, epoch, int(time.time()))
        return admission, self._passes.dumps([self.room, ticket_id, epoch])

    def read_pass(self, token: str) -> Pass:
        # A pass outlives a Redis reset: it proves admission, whatever the epoch now.
        admission = self._load(
            self._passes, "pass", token, self.pass_ttl(), self._passes_seen, _pass
        )
        self._check_room("pass", admission.room, admission.epoch, None)
        return admission

    def _load(
        self,
        serializer: URLSafeTimedSerializer,
        kind: str,
        token: str,
        ttl_s: int,
        seen: dict[str, tuple[_T | None, int, Any]],
        parse: Callable[[Any, int], _T],
    ) -> _T:
        # Each kind has its own salt, so its own key: one kind's token never verifies
        # as the other.
        hit = seen.get(token)
        if hit is None:
            try:
                payload, signed = serializer.loads(token, return_timestamp=True)
            except BadSignature as exc:
                # A readable payload with a wrong signature was altered or signed elsewhere.
                reason: Reason = "tampered" if exc.payload is not None else "garbled"
                raise TicketRejected(kind, reason) from exc
            except BadData as exc:
                raise TicketRejected(kind, "garbled") from exc
            signed_at = int(signed.timestamp())
            try:
                parsed: _T | None = parse(payload, signed_at)
            except Exception:
                parsed = None  # parsed again below, after expiry, to judge it
            if len(seen) >= VERIFIED_CACHE_SIZE:
                seen.clear()
            hit = seen[token] = (parsed, signed_at, payload)
        parsed, signed_at, payload = hit
        age = time.time() - signed_at
        if age < -CLOCK_SKEW_S:
            raise TicketRejected(kind, "tampered", "signed in the future")
        if age > ttl_s:
            raise TicketRejected(kind, "expired", f"{int(age)} s old, lifetime {ttl_s} s")
        if parsed is None:
            try:
                parsed = parse(payload, signed_at)
            except (TypeError, ValueError) as exc:
                raise TicketRejected(kind, "garbled", "unexpected payload") from exc
        return parsed

    def _check_room(self, kind: str, room: str, epoch: str, current: str | None) -> None:
        if room != self.room:
            raise TicketRejected(kind, "foreign", f"for room {room!r}")
        if current is not None and epoch != current:
            raise TicketRejected(kind, "foreign", f"from line {epoch!r}, now {current!r}")


def _ticket(payload: Any, signed_at: int) -> Ticket:
    room, position, ticket_id, epoch, frontier = payload
    return Ticket(str(room), int(position), signed_at, str(ticket_id), str(epoch), int(frontier))


def _pass(payload: Any, signed_at: int) -> Pass:
    room, pass_id, epoch = payload
    return Pass(str(room), str(pass_id), str(epoch), signed_at)
