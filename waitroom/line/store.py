"""Where the line lives in Redis and how every part of waitroom reaches it.

One place builds every Redis client (``connect``, and ``connect_sync`` for the stress
tools): the gateway's line, the pacer lease, the admin sessions and the counters
behind ``/metrics`` all go through the client it returns. Three topologies:

- **one server** (``redis://``, ``rediss://``, ``unix://``): a bounded pool that
  waits for a free connection rather than failing (a spike queues in the worker,
  not as thousands of connections to Redis);
- **Sentinel** (``WAITROOM_REDIS_SENTINELS`` and ``WAITROOM_REDIS_SENTINEL_MASTER``,
  or ``redis+sentinel://h1:p1,h2:p2/<primary>/<db>``): every new connection asks
  the sentinels where the primary is, so after a failover the gateways find the new
  one by themselves; a demoted primary's READONLY drops the connection;
- **Cluster** (``WAITROOM_REDIS_CLUSTER=1`` with seed nodes in the URL, or
  ``redis+cluster://h:p[,h:p]``): redis-py's cluster client follows MOVED and a
  promoted replica. Every key of a room shares one hash tag (``waitroom.line.keys``), so a
  room's scripts run on one node and rooms spread over the nodes.

Replication is asynchronous in both: a primary that dies may take with it writes
it already acknowledged. The writes whose loss would give a place twice or let a
spent ticket buy a second pass (joins, ticket trades, admin changes) are sent with
``WAIT`` on the same connection (``Replicas``), and answered only once a replica
holds them. What a failover may still lose is in the README ("Redis with Sentinel
or Cluster").

Every Redis error becomes ``StoreUnavailable`` in one place (``guard``): callers
deal with one exception, and students see the calm pages and keep their place.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.exceptions
import redis.sentinel
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from waitroom.errors import ConfigError, StoreUnavailable

if TYPE_CHECKING:
    from waitroom.line.scripts import Script

log = logging.getLogger(__name__)

T = TypeVar("T")

Client: TypeAlias = aioredis.Redis | aiocluster.RedisCluster
SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster

# Every Redis error counts as "unavailable", not only a dropped connection: BUSY,
# MISCONF, MASTERDOWN, TRYAGAIN, CLUSTERDOWN, OOM and READONLY all arrive as error
# replies, and the line must survive them as it survives an outage. The cluster
# client's own errors (a slot no node covers yet) are not RedisErrors.
STORE_ERRORS = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, OSError)

SERVER, SENTINEL, CLUSTER = "server", "sentinel", "cluster"
LAYOUT_TIMEOUT_S = 0.5
SENTINEL_SCHEME = "redis+sentinel://"
CLUSTER_SCHEME = "redis+cluster://"
_PLAIN_SCHEMES = ("redis://", "rediss://", "unix://")
_MASTER_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

_URL = "WAITROOM_REDIS_URL"
_SENTINELS = "WAITROOM_REDIS_SENTINELS"
_MASTER = "WAITROOM_REDIS_SENTINEL_MASTER"
_CLUSTER = "WAITROOM_REDIS_CLUSTER"
_WAIT = "WAITROOM_REDIS_WAIT_REPLICAS"
_WAIT_TIMEOUT = "WAITROOM_REDIS_WAIT_TIMEOUT_MS"


class ReplicaLagError(redis.exceptions.RedisError):
    """A write that must survive a failover reached fewer replicas than asked in time."""


@dataclass(frozen=True)
class Topology:
    """Where the line's Redis is: one server, a primary watched by sentinels, or a
    cluster; and how many replicas must hold a join before it is answered."""

    kind: str
    url: str = ""  # one server: its URL as given
    nodes: tuple[tuple[str, int], ...] = ()  # the sentinels, or the cluster's seed nodes
    master: str = ""  # the name the sentinels know the primary by
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    wait_replicas: int = 0
    wait_timeout_ms: int = 500

    def __str__(self) -> str:
        """For logs and banners: never the password."""
        if self.kind == SERVER:
            return _hidden(self.url)
        nodes = ",".join(f"{h}:{p}" for h, p in self.nodes)
        if self.kind == SENTINEL:
            return f"{SENTINEL_SCHEME}{nodes}/{self.master}/{self.db}"
        return f"{CLUSTER_SCHEME}{nodes}"


def topology(
    url: str,
    *,
    sentinels: str = "",
    master: str = "",
    cluster: bool = False,
    wait_replicas: int = -1,
    wait_timeout_ms: int = 500,
) -> Topology:
    """The topology the settings name; a ``ConfigError`` naming the setting and the
    value that cannot be used. ``wait_replicas`` -1 means: 1 with Sentinel or
    Cluster (they exist to survive the loss of a primary), 0 for one server."""
    sentinels = sentinels.strip()
    if wait_replicas < -1:
        raise ConfigError(_WAIT, wait_replicas, "must be 0 or more replicas (-1: the default)")
    if not 1 <= wait_timeout_ms <= 10_000:
        raise ConfigError(_WAIT_TIMEOUT, wait_timeout_ms, "must be 1-10000 ms")
    if sentinels and cluster:
        raise ConfigError(_CLUSTER, "1", f"{_SENTINELS} is set too: Sentinel or Cluster, not both")
    if url.startswith(SENTINEL_SCHEME):
        if sentinels:
            raise ConfigError(_SENTINELS, sentinels, f"{_URL} names the sentinels already")
        if cluster:
            raise ConfigError(_CLUSTER, "1", f"{_URL} is a Sentinel URL")
        found = _sentinel_url(url)
    elif url.startswith(CLUSTER_SCHEME):
        if sentinels:
            raise ConfigError(_SENTINELS, sentinels, f"{_URL} is a cluster URL")
        found = _cluster_url(url, url[len(CLUSTER_SCHEME) :], _URL)
    elif not url.startswith(_PLAIN_SCHEMES):
        raise ConfigError(
            _URL,
            _hidden(url),
            "must start with redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://",
        )
    elif sentinels:
        # The sentinels say where the primary is; the URL, how to log in and which db.
        if not master:
            raise ConfigError(_MASTER, master, f"name the primary that {_SENTINELS} watch")
        if not _MASTER_RE.match(master):
            raise ConfigError(_MASTER, master, "use 1-64 of A-Z, a-z, 0-9, '.', '_', '-'")
        user, password, _, db = _plain_parts(url)
        found = Topology(
            SENTINEL,
            nodes=_nodes(sentinels, _SENTINELS),
            master=master,
            db=db,
            username=user,
            password=password,
            ssl=url.startswith("rediss://"),
        )
    elif cluster:
        if url.startswith("unix://"):
            raise ConfigError(_URL, url, "a cluster is reached over TCP: a node's redis:// URL")
        rest = url.split("://", 1)[1]
        found = _cluster_url(url, rest, _URL, ssl=url.startswith("rediss://"))
    else:
        if master:
            raise ConfigError(_MASTER, master, f"set {_SENTINELS} too, or leave this empty")
        found = Topology(SERVER, url=url)
    wanted = wait_replicas if wait_replicas >= 0 else (0 if found.kind == SERVER else 1)
    return dataclasses.replace(found, wait_replicas=wanted, wait_timeout_ms=wait_timeout_ms)


def topology_of(settings: Any) -> Topology:
    """The topology of a ``waitroom.settings.Settings``."""
    return topology(
        settings.redis_url,
        sentinels=settings.redis_sentinels,
        master=settings.redis_sentinel_master,
        cluster=settings.redis_cluster,
        wait_replicas=settings.redis_wait_replicas,
        wait_timeout_ms=settings.redis_wait_timeout_ms,
    )


def _split_userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        return None, None, netloc
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None), hosts


def _sentinel_url(url: str) -> Topology:
    rest = url[len(SENTINEL_SCHEME) :]
    netloc, _, path = rest.partition("/")
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ConfigError(
            _URL,
            _hidden(url),
            "name the primary: redis+sentinel://host:port[,host:port]/<primary>[/<db>]",
        )
    master = parts[0]
    if not _MASTER_RE.match(master):
        raise ConfigError(
            _URL, _hidden(url), f"{master!r} is not a primary's name (A-Z, a-z, 0-9, ._-)"
        )
    db = _db(parts[1] if len(parts) == 2 else "0", url)
    return _seeded(SENTINEL, url, netloc, _URL, master=master, db=db)


def _cluster_url(url: str, rest: str, setting: str, *, ssl: bool = False) -> Topology:
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ConfigError(setting, _hidden(url), "a cluster has database 0 only")
    return _seeded(CLUSTER, url, netloc, setting, ssl=ssl)


def _seeded(kind: str, url: str, netloc: str, setting: str, **more: Any) -> Topology:
    """A Sentinel or Cluster topology: its nodes and login from the URL's netloc."""
    user, password, hosts = _split_userinfo(netloc)
    nodes = _nodes(hosts, setting, _hidden(url))
    return Topology(kind, nodes=nodes, username=user, password=password, **more)


def _plain_parts(url: str) -> tuple[str | None, str | None, str, int]:
    if url.startswith("unix://"):
        match = re.search(r"[?&]db=(\d+)", url)
        return None, None, "", int(match.group(1)) if match else 0
    netloc, _, path = url.split("://", 1)[1].partition("/")
    user, password, hosts = _split_userinfo(netloc)
    return user, password, hosts, _db(path.split("?")[0].strip("/") or "0", url)


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise ConfigError(_URL, _hidden(url), f"database {text!r} must be a number")
    return int(text)


def _hidden(url: str) -> str:
    """A URL fit for an error message: its password replaced."""
    return re.sub(r"(//[^:@/]*:)[^@/]*@", r"\1***@", url)


def _nodes(text: str, setting: str, shown: str | None = None) -> tuple[tuple[str, int], ...]:
    """``host:port`` pairs, comma-separated (``[::1]:26379`` for IPv6)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):
            host, _, port = part[1:].partition("]:")
        else:
            host, _, port = part.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(
                setting, shown or text, f"{part!r} is not host:port (e.g. 10.0.0.5:26379)"
            )
        out.append((host, int(port)))
    if not out:
        raise ConfigError(setting, shown or text, "name at least one host:port")
    return tuple(out)


def _target(target: str | Topology) -> Topology:
    return target if isinstance(target, Topology) else topology(target)


# -- clients --------------------------------------------------------------------------


# Timeouts shared by every topology: a dead server is noticed within a second and
# the student gets a calm page, not a hang.
SOCKET_TIMEOUT_S = 1.0


class _BlockingSentinelPool(aiosentinel.SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The Sentinel pool that waits for a free connection, as the one-server pool does,
    and closes the connections to the sentinels with its own."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


def connect(target: str | Topology, *, max_connections: int = 64) -> Client:
    """A client for ``target`` (a URL, or the topology of the settings).

    Nothing is sent twice: a script sent again after its reply was lost would run
    twice (a ticket trade would find its own marker and turn its student away), so
    no layer retries; the gateway's loops ask again by themselves.
    """
    top = _target(target)
    # Sentinel's primary and the cluster's nodes alike: the login, and the timeouts.
    login: dict[str, Any] = {
        "username": top.username,
        "password": top.password,
        "ssl": top.ssl,
        "health_check_interval": 10,
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": SOCKET_TIMEOUT_S,
    }
    if top.kind == SENTINEL:
        sentinels = aiosentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(top.nodes),
            # A sentinel that does not answer within this is skipped for the next.
            sentinel_kwargs={"socket_timeout": 0.5, "socket_connect_timeout": 0.5},
        )
        client: aioredis.Redis = sentinels.master_for(
            top.master,
            connection_pool_class=_BlockingSentinelPool,
            max_connections=max_connections,
            timeout=2.0,
            db=top.db,
            **login,
        )
        return client
    if top.kind == CLUSTER:
        return aiocluster.RedisCluster(
            startup_nodes=[aiocluster.ClusterNode(h, p) for h, p in top.nodes],
            # A room's keys are in one slot: nothing needs every slot served, and a
            # dead node's rooms must not stop the others'.
            require_full_coverage=False,
            retry=Retry(NoBackoff(), 0),
            # Per node; coalescing keeps a worker's use to about a dozen.
            max_connections=max_connections,
            **login,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        top.url,
        max_connections=max_connections,
        timeout=2.0,
        health_check_interval=10,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
    return aioredis.Redis.from_pool(pool)  # the client owns (and closes) its pool


def connect_sync(target: str | Topology) -> SyncClient:
    """A blocking client for the stress tools and test probes, same topologies."""
    top = _target(target)
    if top.kind == SENTINEL:
        sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(top.nodes), sentinel_kwargs={"socket_timeout": 0.5}
        )
        sync: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
            top.master,
            db=top.db,
            username=top.username,
            password=top.password,
            socket_timeout=SOCKET_TIMEOUT_S,
        )
        return sync
    if top.kind == CLUSTER:
        return redis.cluster.RedisCluster(
            startup_nodes=[
                redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
                for h, p in top.nodes
            ],
            require_full_coverage=False,
            username=top.username,
            password=top.password,
            socket_timeout=SOCKET_TIMEOUT_S,
            socket_connect_timeout=SOCKET_TIMEOUT_S,
        )
    return redis.Redis.from_url(top.url, socket_timeout=SOCKET_TIMEOUT_S)


def is_cluster(client: Client | SyncClient) -> bool:
    return isinstance(client, aiocluster.RedisCluster | redis.cluster.RedisCluster)


async def drop_idle_connections(client: Client) -> None:
    """Close the idle connections: after an outage they are dead, and the next
    join, spend or count to pick one would fail (a spend or count failing open)."""
    with contextlib.suppress(Exception):
        if isinstance(client, aiocluster.RedisCluster):
            for node in client.get_nodes():
                await node.disconnect_free_connections()
        else:
            await client.connection_pool.disconnect(inuse_connections=False)


# -- errors ---------------------------------------------------------------------------


async def guard(client: Client, operation: str, call: Awaitable[T]) -> T:
    """``await call``, every Redis error turned into ``StoreUnavailable(operation)``.

    On a cluster, a node that failed makes the client ask the nodes for the cluster's
    layout again, so the next call finds where the slot went (a promoted replica);
    the cluster client does that by itself only for single commands, not pipelines.
    Asked, not reset: closing every connection under the other calls in flight broke
    them mid-write. Asked for half a second at most: a seed machine that is gone
    takes a connect timeout to say so, and the student waits for the calm page.
    """
    try:
        return await call
    except STORE_ERRORS as exc:
        if isinstance(client, aiocluster.RedisCluster) and isinstance(
            exc,
            redis.exceptions.ConnectionError
            | redis.exceptions.TimeoutError
            | redis.exceptions.ClusterDownError
            | redis.exceptions.RedisClusterException,
        ):
            with contextlib.suppress(*STORE_ERRORS):
                await asyncio.wait_for(client.nodes_manager.initialize(), LAYOUT_TIMEOUT_S)
        raise StoreUnavailable(operation, f"{type(exc).__name__}: {exc}") from exc


# -- replicas -------------------------------------------------------------------------


async def _pipeline(client: Client) -> tuple[Any, Any]:
    """A pipeline, and on a server or Sentinel the connection it will use: held to
    learn which server took the write (``execute`` releases it)."""
    if isinstance(client, aiocluster.RedisCluster):
        return client.pipeline(transaction=False), None
    pipe = client.pipeline(transaction=False)
    server = await client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
    pipe.connection = server
    return pipe, server


async def _still_primary(client: aioredis.Redis, server: Any) -> None:
    """Raise unless the sentinels name ``server`` (a connection) as the primary now."""
    pool = client.connection_pool
    if not isinstance(pool, aiosentinel.SentinelConnectionPool):
        return  # one server: nobody else to ask
    named = tuple(await pool.get_master_address())  # type: ignore[no-untyped-call]
    wrote = (server.host, int(server.port))
    if named != wrote:
        raise redis.exceptions.ConnectionError(
            f"the write went to {wrote[0]}:{wrote[1]}, but the sentinels name "
            f"{named[0]}:{named[1]} the primary now"
        )


def _replicas_online(role: Any) -> int:
    """The replicas a primary's ROLE lists (it lists those online); 0 from a replica."""
    return len(role[2]) if role and role[0] in (b"master", "master") else 0


class Replicas:
    """Writes answered only once ``wanted`` replicas hold them: ``WAIT`` after the
    script, on the same connection (WAIT counts that connection's writes), with the
    primary's ``ROLE`` in the same round trip.

    A primary with fewer replicas online than wanted (one lost, or the survivor of a
    failover before a new replica joins) is asked for as many as it has: there is no
    copy to wait for, nor one that a failover could promote with the write missing.
    A replica online that does not confirm within the timeout lags: the write is not
    answered (``ReplicaLagError``), since a failover now could lose it.

    Without a replica to confirm it, a write through Sentinel is answered only if the
    sentinels still name the server that took it: an old primary that lost its
    replica to a failover (the sentinels promoted it) takes writes until it is
    demoted, and loses them then. A cluster's primary refuses writes by itself
    once it is cut off from the majority.
    """

    def __init__(self, wanted: int, timeout_ms: int) -> None:
        self.wanted = wanted
        self.timeout_ms = timeout_ms
        # Replicas ROLE listed online last time, per primary ("" for one server).
        self._online: dict[str, int] = {}
        self._short_logged: set[str] = set()
        self.unreplicated = 0  # writes answered without a copy (none was online)
        # Told of each such write (the room-wide counter behind /metrics).
        self.on_unreplicated: Callable[[], None] | None = None

    async def run(
        self, client: Client, script: Script[Any], keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        target: dict[str, Any] = {}
        primary = ""
        if isinstance(client, aiocluster.RedisCluster):
            await client.initialize()
            node = client.get_node_from_key(keys[0])
            if node is not None:
                target["target_nodes"] = node
                primary = node.name
        try:
            if primary not in self._online:
                # A primary not met yet (a start, a failover): how many replicas it
                # has decides what to wait for, and a WAIT for a replica it lacks
                # would only run out its timeout.
                role = await client.execute_command("ROLE", **target)
                self._online[primary] = _replicas_online(role)
            ask = min(self.wanted, self._online[primary])
            for body in (script.sha, script.source):
                pipe, server = await _pipeline(client)
                command = "EVALSHA" if body is script.sha else "EVAL"
                pipe.execute_command(command, body, len(keys), *keys, *args)
                if ask:
                    pipe.execute_command("WAIT", ask, self.timeout_ms, **target)
                pipe.execute_command("ROLE", **target)
                replies: list[Any] = await pipe.execute(raise_on_error=False)
                if not isinstance(replies[0], redis.exceptions.NoScriptError):
                    break
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            acked = int(replies[1]) if ask else 0
            online = self._online[primary] = _replicas_online(replies[-1])
            if online < self.wanted and isinstance(client, aioredis.Redis):
                await _still_primary(client, server)
        except Exception:
            self._online.pop(primary, None)  # after an error, perhaps another primary
            raise
        needed = min(self.wanted, online)  # the copies that could exist now
        if acked < needed and ask >= needed:
            raise ReplicaLagError(
                f"{script.name}: {acked} of {needed} replica(s) confirmed "
                f"within {self.timeout_ms} ms"
            )
        if acked < self.wanted:
            # No replica to wait for (or one back since the last write, waited for
            # from the next write on).
            self.unreplicated += 1
            if self.on_unreplicated is not None:
                self.on_unreplicated()
        if online < self.wanted and primary not in self._short_logged:
            self._short_logged.add(primary)
            log.warning(
                "waitroom: the primary%s has %d replica(s) online, fewer than the %d asked "
                "for: writes are answered without waiting for a copy until one is back",
                f" {primary}" if primary else "",
                online,
                self.wanted,
            )
        elif online >= self.wanted and primary in self._short_logged:
            self._short_logged.discard(primary)
            log.warning(
                "waitroom: the primary%s has a replica online again",
                f" {primary}" if primary else "",
            )
        return replies[0]
