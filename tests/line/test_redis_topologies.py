"""The Redis settings (one server, Sentinel, Cluster), the clients built from them, the
writes that wait for a replica, and a line that a promoted replica holds behind."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from tests.support.gateway_support import make_settings
from waitroom.devtools.embedded_ha import SentinelSet
from waitroom.errors import ConfigError, StoreUnavailable
from waitroom.gateway.services import make_view
from waitroom.line.keys import RoomKeys
from waitroom.line.state import Queue
from waitroom.line.store import (
    CLUSTER,
    SENTINEL,
    SERVER,
    Topology,
    connect,
    topology,
    topology_of,
)
from waitroom.settings import Settings

KEYS = RoomKeys("results")


# -- settings ---------------------------------------------------------------------------


def test_one_server_by_default_with_no_replica_asked_for() -> None:
    top = topology("redis://10.0.0.5:6379/2")
    assert (top.kind, top.url, top.wait_replicas) == (SERVER, "redis://10.0.0.5:6379/2", 0)


def test_a_sentinel_url_names_the_sentinels_the_primary_and_the_database() -> None:
    top = topology("redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2:26380/results/3")
    assert top.kind == SENTINEL
    assert top.nodes == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (top.master, top.db, top.password) == ("results", 3, "s3cret")
    assert top.wait_replicas == 1  # Sentinel exists to survive a primary's loss
    assert "s3cret" not in str(top)


def test_the_sentinel_settings_take_login_and_database_from_the_url() -> None:
    settings = make_settings(
        "redis://:pw@ignored:6379/4",
        redis_sentinels="10.0.0.1:26379, [::1]:26380",
        redis_sentinel_master="board",
        redis_wait_replicas=2,
        redis_wait_timeout_ms=250,
    )
    top = topology_of(settings)
    assert top == Topology(
        SENTINEL,
        nodes=(("10.0.0.1", 26379), ("::1", 26380)),
        master="board",
        db=4,
        password="pw",
        wait_replicas=2,
        wait_timeout_ms=250,
    )


def test_a_cluster_from_its_url_or_from_the_setting() -> None:
    by_url = topology("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
    by_setting = topology("redis://10.0.0.1:7000", cluster=True)
    assert by_url.kind == by_setting.kind == CLUSTER
    assert by_url.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7000))
    assert by_setting.nodes == (("10.0.0.1", 7000),)
    assert by_url.wait_replicas == 1
    assert topology("redis+cluster://h:1", wait_replicas=0).wait_replicas == 0


@pytest.mark.parametrize(
    ("overrides", "setting", "value"),
    [
        ({"redis_url": "http://redis:6379"}, "WAITROOM_REDIS_URL", "http://redis:6379"),
        ({"redis_url": "redis+sentinel://h:26379"}, "WAITROOM_REDIS_URL", "redis+sentinel"),
        ({"redis_url": "redis+sentinel://h:x/m"}, "WAITROOM_REDIS_URL", "h:x"),
        ({"redis_url": "redis+sentinel://h:1/m/x"}, "WAITROOM_REDIS_URL", "m/x"),
        ({"redis_url": "redis+cluster://h:1/2"}, "WAITROOM_REDIS_URL", "h:1/2"),
        ({"redis_sentinels": "h:26379"}, "WAITROOM_REDIS_SENTINEL_MASTER", ""),
        (
            {"redis_sentinels": "h", "redis_sentinel_master": "m"},
            "WAITROOM_REDIS_SENTINELS",
            "h",
        ),
        ({"redis_sentinel_master": "m"}, "WAITROOM_REDIS_SENTINEL_MASTER", "m"),
        (
            {"redis_sentinels": "h:1", "redis_sentinel_master": "m", "redis_cluster": True},
            "WAITROOM_REDIS_CLUSTER",
            "1",
        ),
        (
            {"redis_url": "unix:///run/redis.sock", "redis_cluster": True},
            "WAITROOM_REDIS_URL",
            "unix",
        ),
        ({"redis_wait_replicas": -2}, "WAITROOM_REDIS_WAIT_REPLICAS", "-2"),
        ({"redis_wait_timeout_ms": 0}, "WAITROOM_REDIS_WAIT_TIMEOUT_MS", "0"),
    ],
)
def test_a_redis_setting_that_cannot_be_used_stops_the_start_naming_it(
    overrides: dict[str, object], setting: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(str(overrides.pop("redis_url", "redis://127.0.0.1:6379/0")), **overrides)
    assert caught.value.setting == setting
    assert value in str(caught.value.value)


def test_a_password_in_a_bad_url_is_never_shown() -> None:
    for url in ("redis+sentinel://:s3cret@h:x/m", "redis+cluster://u:s3cret@h:1/5"):
        with pytest.raises(ConfigError) as caught:
            topology(url)
        assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


def test_the_redis_settings_come_from_the_environment() -> None:
    env = {
        "WAITROOM_MODE": "test",
        "WAITROOM_SECRET_KEYS": "k" * 20,
        "WAITROOM_BACKEND_SECRET": "b" * 20,
        "WAITROOM_REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379",
        "WAITROOM_REDIS_SENTINEL_MASTER": "results",
        "WAITROOM_REDIS_WAIT_REPLICAS": "1",
    }
    settings = Settings.from_env(env)
    assert topology_of(settings).kind == SENTINEL
    # ...and reach the worker processes the same way.
    assert Settings.from_env(settings.to_env()) == settings


# -- the writes that wait for a replica --------------------------------------------------


@pytest.fixture(scope="module")
def sentinel_set() -> Iterator[SentinelSet]:
    with SentinelSet() as ha:
        yield ha


async def test_through_sentinel_a_join_is_answered_once_a_replica_holds_it(
    sentinel_set: SentinelSet,
) -> None:
    client = connect(sentinel_set.url)
    settings = make_settings(sentinel_set.url, redis_wait_timeout_ms=300)
    queue = Queue(client, settings.line())
    replica = redis.Redis(port=sentinel_set.replica.port)
    try:
        await client.flushdb()
        await queue.init()
        assert queue.replicas is not None and queue.replicas.wanted == 1
        joined = await queue.join()
        assert joined is not None and joined.position == 1
        # Answered means the replica has it already: nothing to wait for.
        assert replica.hget(KEYS.state, "seq") == b"1"

        # A replica online that does not confirm within the timeout (frozen here)
        # lags: the join is not answered, so a failover now cannot give its place
        # again. A student sees the calm page and asks again.
        assert sentinel_set.replica.process is not None
        pid = sentinel_set.replica.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="ReplicaLagError"):
                await queue.join()
            assert 0.25 <= time.monotonic() - started < 2.0
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.sleep(0.2)
        joined = await queue.join()
        assert joined is not None and joined.position == 3  # 2 was never answered
    finally:
        replica.close()
        await client.aclose()


async def test_without_a_replica_online_joins_go_on_without_waiting(
    sentinel_set: SentinelSet,
) -> None:
    """A lost replica must not stop the line: there is no copy to wait for, nor one a
    failover could promote with the join missing."""
    settings = make_settings(sentinel_set.url, redis_wait_timeout_ms=300)
    client = connect(sentinel_set.url)
    queue = Queue(client, settings.line())
    try:
        await client.flushdb()
        await queue.init()
        sentinel_set.replica.stop()
        deadline = time.monotonic() + 5
        while (await client.execute_command("ROLE"))[2]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        # The first join learns it (one timeout), the next ones do not wait at all.
        assert await queue.join() is not None
        assert queue.replicas is not None and queue.replicas.unreplicated == 1
        started = time.monotonic()
        for _ in range(5):
            assert await queue.join() is not None
        assert time.monotonic() - started < 0.25
        # The replica comes back: joins wait for it again.
        sentinel_set.replica.start()
        deadline = time.monotonic() + 10
        while not (await client.execute_command("ROLE"))[2]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await queue.join()  # learns that the replica is back
        before = queue.replicas.unreplicated
        joined = await queue.join()
        assert joined is not None and queue.replicas.unreplicated == before
        replica = redis.Redis(port=sentinel_set.replica.port)
        assert replica.hget(KEYS.state, "seq") == str(joined.position).encode()
        replica.close()
    finally:
        await client.aclose()


# -- a line that went back ----------------------------------------------------------------


async def test_a_line_held_behind_what_a_worker_saw_is_moved_back_up(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    """A replica promoted before the primary's last writes reached it holds an older
    line: places the gateways issued would be issued again, admissions they showed
    taken back. The workers' memory moves it back up."""
    settings = make_settings(redis_url)
    queue = Queue(redis_client, settings.line())
    await queue.init()
    view = make_view(queue, settings)
    for _ in range(30):
        await queue.join()
    await redis_client.hset(KEYS.state, mapping={"frontier": 20})
    seen = await view.refresh()
    assert seen is not None and (seen.seq, seen.frontier) == (30, 20)
    # What a promoted replica might hold: the last joins and ticks missing.
    await redis_client.hset(KEYS.state, mapping={"seq": 25, "frontier": 12})
    after = await view.refresh()
    assert after is not None and after.epoch == seen.epoch
    assert after.frontier == 20
    # No replica confirmed the joins here: places issued after the worker's read
    # may exist too, so it skips a margin past what it saw.
    assert after.seq >= 30 + 10
    joined = await queue.join()
    assert joined is not None and joined.position > 30
    # Another line (a new epoch) is never touched.
    await redis_client.hset(KEYS.state, mapping={"epoch": "other", "seq": 1, "frontier": 0})
    other = await view.refresh()
    assert other is not None and (other.seq, other.frontier) == (1, 0)


async def test_a_demoted_primary_sends_the_gateway_on_to_the_new_one() -> None:
    """A failover the sentinels run while the old primary lives (maintenance, or a
    partition): until the sentinels demote it, the old primary still takes writes,
    and loses them when it is demoted. A write there has no replica to confirm it
    (its replica was promoted), so it is answered only if the sentinels still name
    that server: they do not, the join is refused (a calm page), and the next one
    goes to the new primary. Once demoted, the old primary's READONLY drops the
    connection too."""
    with SentinelSet() as ha:
        client = connect(ha.url)
        assert isinstance(client.connection_pool, aioredis.BlockingConnectionPool)
        queue = Queue(client, make_settings(ha.url).line())
        try:
            await queue.init()
            first = await queue.join()
            assert first is not None and first.position == 1
            old = ha.primary_port()
            with redis.Redis(port=ha.sentinel_ports[0]) as sentinel:
                assert sentinel.execute_command("SENTINEL", "FAILOVER", "waitroom")
            new = await asyncio.to_thread(ha.wait_failover, old)
            answered = []
            refused = []
            for _ in range(8):
                try:
                    answered.append(await queue.join())
                except StoreUnavailable as exc:
                    refused.append(str(exc))
            assert 1 <= len(refused) <= 3, refused
            assert all(
                "sentinels name" in text or "ReadOnly" in text or "slave" in text
                for text in refused
            ), refused
            # Every join answered after the failover is on the new primary, in order.
            positions = [j.position for j in answered if j is not None]
            assert len(positions) == len(answered) >= 5
            assert positions == sorted(set(positions)) and positions[0] >= 2
            with redis.Redis(port=new) as promoted:
                assert int(promoted.hget(KEYS.state, "seq") or 0) == positions[-1]
        finally:
            await client.aclose()
