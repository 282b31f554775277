"""Every Lua script of ``waitroom/line/lua/``, loaded once, with its reply typed.

One ``Script`` per file, made here at import and nowhere else (a test checks that
every file has exactly one): its source read once, its SHA1 worked out once, the
name of the step it is (what ``StoreUnavailable`` and the ``store_error`` metric
say) and the one function that turns its raw reply into Python values. Each
file's header says what its KEYS and ARGV are and what it returns; the parser
beside it here is the only code that reads that reply.

A call is EVALSHA, and EVAL with the source when the server does not have it (a
restart, a promoted replica), which caches it there; on a cluster it is routed by
its first key, like any keyed command. Writes that must survive a failover go
through ``waitroom.line.store.Replicas`` (WAIT on the same connection). Every Redis
error of a call becomes ``StoreUnavailable`` through ``waitroom.line.store.guard``,
the one mapping, so the callers handle one exception.

The stress tools run the same files on blocking clients in pipelines:
``Script.register`` hands them redis-py's own ``Script`` of the same source.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

import redis.exceptions
from redis.commands.core import Script as SyncScript

from waitroom.line.store import Client, Replicas, SyncClient, guard

__all__ = [
    "ADVANCE",
    "CATCH_UP",
    "CONFIGURE",
    "COUNT",
    "GOVERN",
    "INIT",
    "JOIN",
    "LOGIN",
    "SCRIPTS",
    "SPEND",
    "Configured",
    "Joined",
    "Refused",
    "Script",
    "Tick",
    "source",
]

R = TypeVar("R")


def source(name: str) -> str:
    """The text of ``waitroom/line/lua/<name>``."""
    return resources.files("waitroom.line").joinpath("lua", name).read_text(encoding="utf-8")


class Script(Generic[R]):
    """One Lua script: its source, SHA1, the step it is, and its reply's parser."""

    def __init__(self, name: str, operation: str, reply: Callable[[Any], R]) -> None:
        self.name = name
        self.operation = operation
        self.source = source(name)
        self.sha = hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()
        self.reply = reply

    async def __call__(
        self,
        client: Client,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        replicas: Replicas | None = None,
    ) -> R:
        """Run it and parse its reply; a Redis error is ``StoreUnavailable(operation)``."""
        raw = await guard(client, self.operation, self.raw(client, keys, args, replicas=replicas))
        return self.reply(raw)

    async def raw(
        self,
        client: Client,
        keys: Sequence[str],
        args: Sequence[Any],
        *,
        replicas: Replicas | None = None,
    ) -> Any:
        """Run it: its reply as Redis sent it, its errors as redis-py raised them."""
        if replicas is not None and replicas.wanted > 0:
            return await replicas.run(client, self, keys, args)
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *args)

    def register(self, client: SyncClient) -> SyncScript:
        """The same script on a blocking client (``register_script``): raw replies,
        usable in pipelines. For the stress tools."""
        return client.register_script(self.source)


# -- typed replies ----------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    position: int
    frontier: int
    admitted: bool
    epoch: str


@dataclass(frozen=True)
class Refused:
    """An arrival over a per-client join limit: no place, try again in ``wait_s``."""

    wait_s: int


@dataclass(frozen=True)
class Configured:
    ok: bool
    changed: int = 0
    reason: str = ""
    frontier: int = 0
    size: int = 0


@dataclass(frozen=True)
class Tick:
    holder: bool
    frontier: int = 0
    seq: int = 0
    advanced: int = 0
    active: int = 0


def text(value: Any) -> str:
    """A Redis string as ``str`` (clients may hand bytes or str)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _joined(reply: list[Any]) -> list[Joined | Refused] | None:
    if len(reply) == 1:
        return None  # the room has no state
    frontier, epoch = int(reply[0]), text(reply[1])
    out: list[Joined | Refused] = []
    for raw in reply[2:]:
        position = int(raw)
        if position > 0:
            out.append(Joined(position, frontier, position <= frontier, epoch))
        else:  # refused: minus the ms until the client's window lets it in
            out.append(Refused(max(1, math.ceil(-position / 1000))))
    return out


def _tick(reply: list[Any]) -> Tick | None:
    if reply[0] == -1:
        return None  # the room has no state
    if reply[0] == 0:
        return Tick(holder=False)
    _, frontier, seq, advanced, active = (int(x) for x in reply)
    return Tick(True, frontier, seq, advanced, active)


def _configured(reply: list[Any]) -> Configured:
    if int(reply[0]) == 1:
        return Configured(True, changed=int(reply[1]))
    return Configured(False, reason=text(reply[1]), frontier=int(reply[2]), size=int(reply[3]))


def _pair(reply: list[Any]) -> tuple[int, int]:
    return int(reply[0]), int(reply[1])


def _flags(reply: list[Any]) -> list[bool]:
    return [bool(int(x)) for x in reply]


def _pairs(reply: list[Any]) -> list[tuple[int, int]]:
    return [(int(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]


def _login(reply: list[Any]) -> tuple[bool, int, int]:
    allowed, retry_after_s, count = (int(x) for x in reply)
    return bool(allowed), retry_after_s, count


# -- the registry: one per file of lua/ -------------------------------------------------

JOIN = Script("join.lua", "join", _joined)
ADVANCE = Script("advance.lua", "pacer tick", _tick)
INIT = Script("init.lua", "init", bool)
CATCH_UP = Script("catch_up.lua", "catch up", _pair)
CONFIGURE = Script("configure.lua", "configure", _configured)
SPEND = Script("spend.lua", "spend tickets", _flags)
GOVERN = Script("govern.lua", "govern", bool)
COUNT = Script("count.lua", "count", _pairs)
LOGIN = Script("login.lua", "count login", _login)

SCRIPTS: dict[str, Script[Any]] = {
    s.name: s for s in (JOIN, ADVANCE, INIT, CATCH_UP, CONFIGURE, SPEND, GOVERN, COUNT, LOGIN)
}
