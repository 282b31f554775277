"""Two rooms on one Redis Cluster, on different nodes: one loses its primary, the other
does not notice.

A cluster of three primaries with a replica each (``waitroom.devtools.embedded_ha``), a gateway
process per room (class X and class XII results on one day), a crowd in each. The
primary serving class X's slot is killed with SIGKILL mid-spike; the cluster promotes
its replica. Class X keeps every promise of a failover (no place lost or given twice,
admission in order, resumed within the promotion plus 2 s, no flood); class XII, on
another node, sees no calm page at all and keeps admitting at its rate throughout.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.crc import key_slot

from tests.support.gateway_processes import node_env
from tests.support.ha_crowd import Crowd, Student, gateway_nodes, lease_holder_node
from waitroom.devtools.embedded_ha import ClusterSet
from waitroom.line.keys import RoomKeys
from waitroom.line.store import connect_sync

RATE = 10.0
STRUCK, SPARED = RoomKeys("class-x"), RoomKeys("class-xii")


@pytest.mark.timeout(150)
async def test_a_node_lost_fails_over_its_room_and_spares_the_other(backend: Any) -> None:
    with ClusterSet() as cluster:
        struck_node = cluster.owner_of(STRUCK.state)
        spared_node = cluster.owner_of(SPARED.state)
        assert struck_node is not spared_node, (key_slot(STRUCK.state.encode()), "same node")
        envs = [
            node_env(cluster.url, backend.url, rate=RATE, pacer_lease_s=1.0, room=keys.room)
            for keys in (STRUCK, SPARED)
        ]
        async with gateway_nodes(envs) as nodes:
            struck_url, spared_url = (f"http://127.0.0.1:{port}" for port in nodes)
            crowds = {struck_url: Crowd(), spared_url: Crowd()}
            for url, crowd in crowds.items():
                # 60 in a spike, then 3 a second for 5 s: six seconds of line at the
                # rate, longer than the kill and the promotion.
                crowd.students = [Student(i, url, url) for i in range(75)]
            stop = asyncio.Event()
            watchers = [asyncio.create_task(c.watch([url], stop)) for url, c in crowds.items()]
            deadline = time.monotonic() + 60

            async def arrive(crowd: Crowd, s: Student) -> None:
                await asyncio.sleep(s.index * 0.01 if s.index < 60 else 1 + (s.index - 60) / 3)
                await crowd.journey(s, deadline)

            journeys = [
                asyncio.create_task(arrive(c, s)) for c in crowds.values() for s in c.students
            ]
            try:
                await asyncio.sleep(3.0)
                struck, spared = crowds[struck_url], crowds[spared_url]
                killed_at = {url: c.now() for url, c in crowds.items()}
                struck_node.kill()
                promoted = await asyncio.to_thread(cluster.wait_promoted, STRUCK.state, struck_node)
                promotion_s = struck.now() - killed_at[struck_url]
                await asyncio.gather(*journeys)
            finally:
                stop.set()
                for task in journeys:
                    task.cancel()
                await asyncio.gather(*journeys, *watchers, return_exceptions=True)
                for crowd in crowds.values():
                    await crowd.close()

            # The struck node's replica took its slots over.
            assert promoted in cluster.replicas
            assert promotion_s < 8.0, promotion_s
            assert cluster.owner_of(SPARED.state) is spared_node

            # Class X: every promise of a failover.
            struck.check_answers()
            places = struck.check_places()
            assert struck.check_order() == 0
            struck.check_frontier_never_moves_back()
            assert struck.failed_joins > 0  # the outage was seen
            kill = killed_at[struck_url]
            resumed = struck.resumed_at(kill)
            assert resumed is not None, "class X never resumed"
            assert resumed - kill <= promotion_s + 2.0, (resumed - kill, promotion_s)
            burst = struck.check_no_burst(struck.noticed_at(kill), resumed, RATE)

            # Class XII: nothing happened. No calm page, no place lost, in order, and
            # admission at the rate while class X was down.
            spared.check_answers()
            assert spared.failed_joins == 0
            assert not [a for a in spared.answers if a[2] == 503], "class XII saw a calm page"
            spared.check_places()
            assert spared.check_order() == 0
            spared.check_frontier_never_moves_back()
            kill = killed_at[spared_url]
            admitted = spared.frontier_at(kill + promotion_s) - spared.frontier_at(kill)
            expected = RATE * promotion_s
            assert admitted >= 0.7 * expected - 1, (admitted, expected)

            store = connect_sync(cluster.url)
            try:
                for keys in (STRUCK, SPARED):
                    assert lease_holder_node(store.get(keys.lease), nodes) in nodes, keys.room
            finally:
                store.close()
            print(
                f"promotion {promotion_s:.2f} s, class X resumed {resumed - kill:.2f} s after "
                f"the kill, burst {burst:.1f}, {places}; class XII admitted {admitted} "
                f"meanwhile ({expected:.0f} at the rate)"
            )
