"""Redis that survives the loss of a machine, on this machine: for the tests and the
stress tools, from the same server binary as ``waitroom.devtools.embedded_redis``.

- ``SentinelSet``: a primary, a replica and three sentinels watching them.
- ``ClusterSet``: a cluster of three primaries (the 16,384 slots split in three),
  each with a replica unless asked otherwise.

Every process listens on a private TCP port of 127.0.0.1 and announces that
address (sentinels and cluster nodes tell clients where the others are), with short
timeouts so that a failover takes a couple of seconds rather than the production
defaults' half a minute, and dies with its parent like the single server. Start
them from the main thread: Linux signals a child when the *thread* that started it
ends, so a set started from a worker thread would die with that thread.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.crc import key_slot

from waitroom.devtools.embedded_redis import EmbeddedRedis, find_server_binary
from waitroom.errors import EmbeddedRedisError
from waitroom.shared.processes import free_port

HOST = "127.0.0.1"
MASTER_NAME = "waitroom"
# A sentinel calls a primary down after this long without an answer, and a cluster
# node its peer; production keeps the defaults (30 s, 15 s) or a few seconds.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
SLOTS = 16384

# Replication starts at once (no 5 s wait for more replicas to share one transfer),
# and every node tells the others 127.0.0.1 rather than whatever it guesses.
_REPLICATION = ("--repl-diskless-sync-delay", "0", "--replica-announce-ip", HOST)


def _client(port: int) -> redis.Redis:
    return redis.Redis(host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)


def _until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            if check():
                return
        time.sleep(0.05)
    raise EmbeddedRedisError(f"{what}: not within {timeout:.0f} s")


def _online_replicas(port: int) -> int:
    with _client(port) as client:
        role: list[Any] = client.execute_command("ROLE")
    return len(role[2]) if role[0] == b"master" else 0


class EmbeddedSentinel(EmbeddedRedis):
    """One sentinel process, watching ``MASTER_NAME`` at the primary's port."""

    def __init__(self, workdir: Path, primary_port: int, *, binary: Path) -> None:
        super().__init__(port=free_port(), workdir=workdir, binary=binary)
        self.primary_port = primary_port

    def _command(self) -> list[str]:
        # A sentinel rewrites its configuration file as it learns: it needs its own.
        conf = self.workdir / "sentinel.conf"
        if not conf.exists():
            conf.write_text(
                "\n".join(
                    [
                        f"port {self.port}",
                        f"bind {HOST}",
                        f"dir {self.workdir}",
                        f"logfile {self.workdir / 'redis.log'}",
                        f"sentinel announce-ip {HOST}",
                        f"sentinel monitor {MASTER_NAME} {HOST} {self.primary_port} 2",
                        f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                        f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                        f"sentinel parallel-syncs {MASTER_NAME} 1",
                        "",
                    ]
                ),
                encoding="utf-8",
            )
        return [str(self.binary), str(conf), "--sentinel"]

    def stop(self, *, save: bool = False, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


class _Set:
    """Servers in one private directory, stopped and removed together."""

    def __init__(self, prefix: str) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.binary = find_server_binary()
        self.servers: list[EmbeddedRedis] = []

    def _server(self, name: str, *args: str) -> EmbeddedRedis:
        folder = self.workdir / name
        folder.mkdir()
        server = EmbeddedRedis(
            port=free_port(), workdir=folder, binary=self.binary, args=(*_REPLICATION, *args)
        )
        self.servers.append(server)
        return server

    def by_port(self, port: int) -> EmbeddedRedis:
        return next(s for s in self.servers if s.port == port)

    def start(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SentinelSet(_Set):
    """A primary, a replica of it and three sentinels with a quorum of two."""

    def __init__(self) -> None:
        super().__init__("waitroom-sentinel-")
        self.primary = self._server("primary")
        assert self.primary.port is not None
        self.replica = self._server("replica", "--replicaof", HOST, str(self.primary.port))
        self.sentinels = [
            EmbeddedSentinel(self._folder(f"sentinel{i}"), self.primary.port, binary=self.binary)
            for i in range(3)
        ]
        self.servers += self.sentinels

    def _folder(self, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir()
        return folder

    @property
    def url(self) -> str:
        nodes = ",".join(f"{HOST}:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{nodes}/{MASTER_NAME}/0"

    @property
    def sentinel_ports(self) -> list[int]:
        return [s.port for s in self.sentinels if s.port is not None]

    def start(self, timeout: float = 30.0) -> SentinelSet:
        try:
            self.primary.start()
            self.replica.start()
            assert self.primary.port is not None
            port = self.primary.port
            _until("the replica in sync", lambda: _online_replicas(port) == 1, timeout)
            for sentinel in self.sentinels:
                sentinel.start()
            # Each sentinel must know the replica (to promote it) and the other two (to
            # reach a quorum and elect a leader) before a failover can happen.
            _until("the sentinels acquainted", self._acquainted, timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _acquainted(self) -> bool:
        for port in self.sentinel_ports:
            with _client(port) as client:
                state: dict[str, Any] = client.sentinel_master(MASTER_NAME)
            if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                return False
        return True

    def primary_port(self) -> int:
        """The primary's port as the sentinels name it now."""
        for port in self.sentinel_ports:
            with contextlib.suppress(redis.exceptions.RedisError, OSError), _client(port) as c:
                address = c.sentinel_get_master_addr_by_name(MASTER_NAME)
                if address:
                    return int(address[1])
        raise EmbeddedRedisError("no sentinel names a primary")

    def current_primary(self) -> EmbeddedRedis:
        return self.by_port(self.primary_port())

    def wait_failover(self, old_port: int, timeout: float = 15.0) -> int:
        """Until the sentinels name a new primary and it says so itself; its port."""
        found: list[int] = []

        def switched() -> bool:
            port = self.primary_port()
            if port == old_port:
                return False
            with _client(port) as client:
                role: list[Any] = client.execute_command("ROLE")
            found[:] = [port]
            return bool(role[0] == b"master")

        _until("a new primary", switched, timeout)
        return found[0]


class ClusterSet(_Set):
    """A cluster of three primaries, each with a replica (``replicas=False``: none).

    Nodes keep serving their own slots while another node is down
    (``cluster-require-full-coverage no``): one room's failover does not stop the
    rooms on the other nodes.
    """

    def __init__(self, *, replicas: bool = True, primaries: int = 3) -> None:
        super().__init__("waitroom-cluster-")
        count = primaries * (2 if replicas else 1)
        for i in range(count):
            self._server(
                f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                str(DOWN_AFTER_MS),
                "--cluster-require-full-coverage",
                "no",
                "--cluster-announce-ip",
                HOST,
                # The bus port is port + 10000 unless named: pick a free one.
                "--cluster-port",
                str(free_port()),
            )
        self.primaries = self.servers[:primaries]
        self.replicas = self.servers[primaries:]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{s.port}" for s in self.primaries)

    def start(self, timeout: float = 30.0) -> ClusterSet:
        try:
            for server in self.servers:
                server.start()
            self._form(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _form(self, timeout: float) -> None:
        ports = [s.port for s in self.servers if s.port is not None]
        share = SLOTS // len(self.primaries)
        for i, server in enumerate(self.primaries):
            first = i * share
            last = SLOTS - 1 if i == len(self.primaries) - 1 else first + share - 1
            with _client(self._port(server)) as client:
                # Distinct epochs up front, as valkey-cli does: no collisions to settle.
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with _client(ports[0]) as first_node:
            for server in self.servers[1:]:
                bus = server.args[server.args.index("--cluster-port") + 1]
                first_node.execute_command("CLUSTER", "MEET", HOST, server.port, bus)

        def everyone_known() -> bool:
            for port in ports:
                with _client(port) as client:
                    nodes = client.execute_command("CLUSTER", "NODES")
                if len(_text(nodes).strip().splitlines()) != len(ports):
                    return False
            return True

        _until("the cluster's nodes met", everyone_known, timeout)
        for primary, replica in zip(self.primaries, self.replicas, strict=False):
            with _client(self._port(primary)) as client:
                node_id = _text(client.execute_command("CLUSTER", "MYID"))
            with _client(self._port(replica)) as client:
                client.execute_command("CLUSTER", "REPLICATE", node_id)

        def ready() -> bool:
            for port in ports:
                with _client(port) as client:
                    if "cluster_state:ok" not in _text(client.execute_command("CLUSTER", "INFO")):
                        return False
            return all(
                _online_replicas(self._port(p)) == 1 for p in self.primaries[: len(self.replicas)]
            )

        _until("the cluster ready", ready, timeout)

    @staticmethod
    def _port(server: EmbeddedRedis) -> int:
        assert server.port is not None
        return server.port

    def slot_owner(self, slot: int) -> EmbeddedRedis:
        """The server that serves ``slot`` now, as a live node says."""
        for server in self.servers:
            if server.process is None:
                continue
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                with _client(self._port(server)) as client:
                    ranges: list[Any] = client.execute_command("CLUSTER", "SLOTS")
                for first, last, owner, *_ in ranges:
                    if int(first) <= slot <= int(last):
                        return self.by_port(int(owner[1]))
        raise EmbeddedRedisError(f"no live node names the owner of slot {slot}")

    def owner_of(self, key: str) -> EmbeddedRedis:
        return self.slot_owner(key_slot(key.encode()))

    def wait_promoted(self, key: str, dead: EmbeddedRedis, timeout: float = 15.0) -> EmbeddedRedis:
        """Until a live node serves ``key``'s slot in place of ``dead``; that node."""
        found: list[EmbeddedRedis] = []

        def promoted() -> bool:
            owner = self.owner_of(key)
            if owner is dead or owner.process is None:
                return False
            with _client(self._port(owner)) as client:
                role: list[Any] = client.execute_command("ROLE")
            found[:] = [owner]
            return bool(role[0] == b"master")

        _until(f"a replica promoted for {key}", promoted, timeout)
        return found[0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def started(kind: str) -> Iterator[tuple[str, Any]]:
    """``plain``, ``sentinel`` or ``cluster``, started: (its URL, the set)."""
    if kind == "sentinel":
        with SentinelSet() as ha:
            yield ha.url, ha
    elif kind == "cluster":
        with ClusterSet() as cluster:
            yield cluster.url, cluster
    elif kind == "plain":
        with EmbeddedRedis() as server:
            yield server.url, server
    else:
        raise ValueError(f"unknown Redis kind {kind!r}: plain, sentinel or cluster")
