"""The line survives the loss of its Redis primary: real Sentinel, real gateways.

A primary, a replica and three sentinels (``waitroom.devtools.embedded_ha``), two gateway
processes that reach them through Sentinel, the lookup backend, and a crowd over
HTTP: a spike, then arrivals that keep coming. The primary is killed with SIGKILL
while the line moves. Sentinel promotes the replica; the gateways find it by
themselves. Nobody may see a 5xx but the calm page, lose or share a place, be let
in before someone ahead or be sent back; admission must resume within the
failover plus 2 s, at the rate, with no flood.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.support.gateway_processes import node_env
from tests.support.ha_crowd import Crowd, Student, gateway_nodes, lease_holder_node
from waitroom.devtools.embedded_ha import SentinelSet
from waitroom.line.keys import RoomKeys
from waitroom.line.store import connect_sync

KEYS = RoomKeys("results")
RATE = 10.0


@pytest.mark.timeout(150)
async def test_the_primary_killed_mid_spike_loses_no_place_and_admits_in_order(
    backend: Any,
) -> None:
    with SentinelSet() as ha:
        env = node_env(ha.url, backend.url, rate=RATE, pacer_lease_s=1.0)
        async with gateway_nodes([env, env]) as nodes:
            urls = [f"http://127.0.0.1:{port}" for port in nodes]
            crowd = Crowd()
            crowd.students = [Student(i, urls[i % 2], urls[(i + 1) % 2]) for i in range(80)]
            stop = asyncio.Event()
            watcher = asyncio.create_task(crowd.watch(urls, stop))
            deadline = time.monotonic() + 60

            async def arrive(s: Student) -> None:
                # 50 in the first half second (the spike), then 3 a second for 10 s:
                # arrivals before, during and after the failover.
                await asyncio.sleep(s.index * 0.01 if s.index < 50 else 1 + (s.index - 50) / 3)
                await crowd.journey(s, deadline)

            journeys = [asyncio.create_task(arrive(s)) for s in crowd.students]
            try:
                await asyncio.sleep(3.0)  # the line is long and moving
                old = ha.primary_port()
                killed_at = crowd.now()
                ha.by_port(old).kill()  # SIGKILL: nothing saved, nothing handed over
                new = await asyncio.to_thread(ha.wait_failover, old)
                failover_s = crowd.now() - killed_at
                await asyncio.gather(*journeys)
            finally:
                stop.set()
                for task in journeys:
                    task.cancel()
                await asyncio.gather(*journeys, watcher, return_exceptions=True)
                await crowd.close()

            # Sentinel promoted the replica within its own timeouts (1 s to call the
            # primary down, 3 s failover timeout).
            assert new == ha.replica.port
            assert failover_s < 8.0, failover_s

            crowd.check_answers()
            places = crowd.check_places()
            assert crowd.check_order() == 0
            crowd.check_frontier_never_moves_back()
            # The outage was seen: new arrivals got the calm page while it lasted.
            assert crowd.failed_joins > 0

            # Admission resumed within the failover plus 2 s, then kept to the rate.
            resumed = crowd.resumed_at(killed_at)
            assert resumed is not None, "admission never resumed"
            assert resumed - killed_at <= failover_s + 2.0, (resumed - killed_at, failover_s)
            burst = crowd.check_no_burst(crowd.noticed_at(killed_at), resumed, RATE)

            # The pacer lease was taken up again on the new primary by one of the
            # gateways' workers.
            store = connect_sync(ha.url)
            try:
                holder = store.get(KEYS.lease)
                assert lease_holder_node(holder, nodes) in nodes, holder
                state = store.hgetall(KEYS.state)
            finally:
                store.close()
            assert int(state[b"frontier"]) >= max(s.position or 0 for s in crowd.students)
            # The promoted primary has no replica: joins after the failover were answered
            # without a copy, and /metrics says so (room-wide, from either gateway).
            await asyncio.sleep(0.6)  # a flush of the workers' counters
            async with aiohttp.ClientSession() as session:
                async with session.get(urls[1] + "/metrics") as response:
                    text = await response.text()
            unreplicated = next(
                float(line.split()[-1])
                for line in text.splitlines()
                if line.startswith("waitroom_redis_unreplicated_writes_total")
            )
            assert unreplicated > 0, text
            print(
                f"failover {failover_s:.2f} s, admission resumed "
                f"{resumed - killed_at:.2f} s after the kill, burst {burst:.1f}, {places}"
            )
