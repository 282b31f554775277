"""Abuse limits: lookups per admission pass, places in line per client.

Both are counters in Redis with a TTL set at their first use, so they hold across
workers and gateway nodes; lookups are counted by ``count.lua`` (the uses of many
passes in one round trip), joins by ``join.lua`` as it hands out the places:

- A pass buys ``pass_max_lookups`` lookups (``POST /result``, ``POST /api/result``)
  within its lifetime. A pass copied to many devices, or used to guess dates of
  birth for a roll number, stops there; the student joins the line again for more.
  A lookup that the backend could not answer (down, slow, 5xx) or did not look up
  (malformed input) is given back, so an outage never uses up a student's lookups.
- A client takes at most ``join_limit`` new places per ``join_window_s``, so one
  machine cannot hold thousands of places. Waiting students never join again
  (their ticket keeps their place), so this touches only new arrivals.

Who "a client" is: the TCP peer, unless that peer is a configured trusted proxy,
in which case ``X-Forwarded-For`` is read from the right, skipping trusted hops,
and the first address that is not a trusted proxy is the client. Hypercorn's
``ProxyFixMiddleware`` instead trusts a fixed number of hops: a request that
reaches a gateway without passing the load balancer (a second listener, a
misrouted health check, a proxy that skips a hop) would then name any client it
likes. Trust by address is correct whatever the path, and works on granian too.
IPv6 clients count per /64, the block one subscriber gets: counting per address
would let one phone take a place per address of its own /64.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from waitroom.errors import StoreUnavailable
from waitroom.line.coalesce import Coalescer
from waitroom.line.keys import RoomKeys
from waitroom.line.scripts import COUNT
from waitroom.line.store import Client
from waitroom.room.snapshot import RoomView
from waitroom.room.tickets import CLOCK_SKEW_S

log = logging.getLogger(__name__)

_XFF = b"x-forwarded-for"
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def looked_up(status: int | None) -> bool:
    """Whether the origin's answer means the lookup was made: any success or
    redirect (a site that answers a form with "see /marks"), and "no such result"
    (which must count, or a pass would buy unlimited guesses of a date of birth).
    A refusal of the request itself (400, 405, 413...) or no answer gives it back."""
    return status is not None and (status < 400 or status == 404)


@dataclass(frozen=True, slots=True)
class LookupVerdict:
    allowed: bool
    used: int
    limit: int
    # Whether a use was recorded in Redis (and so may be given back).
    counted: bool


class Limits:
    def __init__(
        self,
        client: Client,
        keys: RoomKeys,
        view: RoomView,
        *,
        max_lookups: int,
        trusted_proxies: Iterable[str],
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        # Lookups a pass buys (WAITROOM_PASS_MAX_LOOKUPS; 0: no limit).
        self.max_lookups = max_lookups
        self.keys = keys
        self.view = view
        self.client = client
        # Lookups of many passes, and give-backs, in one round trip (waitroom.line.coalesce).
        self.counts: Coalescer[tuple[str, int], tuple[int, int]] = Coalescer(
            self._count_many, on_batch=on_batch
        )
        self.trusted = parse_networks(trusted_proxies)
        self._untrusted_xff_logged = False

    async def _count_many(self, uses: Sequence[tuple[str, int]]) -> list[tuple[int, int]]:
        keys = [key for key, _ in uses]
        args = [self._pass_window_ms(), *(change for _, change in uses)]
        return await COUNT(self.client, keys, args)

    # -- lookups per pass ----------------------------------------------------------

    def _pass_window_ms(self) -> int:
        # A pass lives its lifetime (an admin may change it at run time) from its
        # signing, judged with CLOCK_SKEW_S of tolerance; a counter started at its
        # first lookup outlives it.
        return (self.view.pass_ttl_s() + CLOCK_SKEW_S) * 1000

    async def take_lookup(self, pass_id: str) -> LookupVerdict:
        """Count one lookup with this pass; ``allowed`` is False past the limit."""
        limit = self.max_lookups
        # Fail open, as for spent tickets: the pass is signed and expires, so an
        # outage lets a shared pass buy at most what the backend serves until it
        # expires, while failing closed would stop every admitted student's lookup
        # for as long as Redis is away, the very students the room exists to serve.
        # A worker whose view already saw Redis go away does not wait to learn it again.
        if limit == 0 or not self.view.healthy:
            return LookupVerdict(True, 0, limit, counted=False)
        try:
            used, _ = await self.counts.call((self.keys.lookups(pass_id), 1))
        except StoreUnavailable as exc:
            log.warning("waitroom: %s; lookup not counted", exc)
            return LookupVerdict(True, 0, limit, counted=False)
        return LookupVerdict(used <= limit, used, limit, counted=True)

    async def settle(self, pass_id: str, verdict: LookupVerdict, status: int | None) -> None:
        """Give a counted lookup back when the backend did not make it.

        ``status`` is the backend's answer, None when it could not answer at all.
        """
        if not verdict.counted or not verdict.allowed or looked_up(status):
            return
        try:
            await self.counts.call((self.keys.lookups(pass_id), -1))
        except StoreUnavailable as exc:
            log.warning("waitroom: %s; a failed lookup stays counted", exc)

    # -- who a client is -------------------------------------------------------------

    def client_of(self, peer: Sequence[Any] | None, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """The key the per-client join limit counts a request's client by (the ASGI
        scope's ``client`` and ``headers``)."""
        forwarded = [v for k, v in headers if k == _XFF]
        address = client_address(peer[0] if peer else None, forwarded, self.trusted)
        if forwarded and not self._untrusted_xff_logged and not self.trusted_peer(peer):
            # Most likely a load balancer that is not in WAITROOM_TRUSTED_PROXIES:
            # then every student counts as the balancer, and joins get refused.
            self._untrusted_xff_logged = True
            log.warning(
                "waitroom: X-Forwarded-For from %s, which is not a trusted proxy; if it is "
                "your load balancer, add it to WAITROOM_TRUSTED_PROXIES",
                peer[0] if peer else "a unix socket",
            )
        return address

    def trusted_peer(self, peer: Sequence[Any] | None) -> bool:
        address = _parse_ip(str(peer[0])) if peer else None
        return peer is None or (address is not None and any(address in net for net in self.trusted))


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    """An address from a peer or an X-Forwarded-For entry (a port may follow it).

    Every new arrival's address is parsed here: ``inet_pton`` checks it in C, where
    ``ip_address(text)`` cost 20 µs in Python. Remembered for the load balancers
    and the students behind one NAT, who come back.
    """
    text = text.strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # 203.0.113.7:51234
        text = text.partition(":")[0]
    try:
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        address = ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text.partition("%")[0]))
    except OSError:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _key(address: IPAddress) -> str:
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def client_address(
    peer: str | None, forwarded_for: Sequence[bytes], trusted: Sequence[IPNetwork]
) -> str:
    """The key of the client to hold responsible for a request.

    ``peer`` is the TCP peer's address (None on a unix socket: only a local process,
    a proxy on this machine, can connect there, so it is trusted). Each trusted hop
    appended the address it saw to X-Forwarded-For, so the header is read from the
    right while the address in hand is a trusted proxy. An entry that is not an
    address cannot have come from a trusted proxy: reading stops at the hop before it.
    """
    current = _parse_ip(peer) if peer is not None else None
    if peer is not None and current is None:
        return "unknown"

    def is_trusted(address: IPAddress | None) -> bool:
        return address is None or any(address in network for network in trusted)

    if not is_trusted(current) or not forwarded_for:
        return _key(current) if current is not None else "local"
    entries = [
        part
        for value in forwarded_for
        for part in value.decode("latin-1").split(",")
        if part.strip()
    ]
    while entries and is_trusted(current):
        hop = _parse_ip(entries.pop())
        if hop is None:
            break
        current = hop
    return _key(current) if current is not None else "local"
