"""The line in a real Redis: positions, pacing, the lease, restoring after a reset."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from tests.support.gateway_support import make_settings
from waitroom.gateway.services import make_pacer, make_view
from waitroom.line.state import Queue, connect
from waitroom.settings import Settings


async def _queue(client: aioredis.Redis, url: str, **overrides: object) -> tuple[Queue, Settings]:
    settings = make_settings(url, **overrides)
    queue = Queue(client, settings.line())
    await queue.init()
    return queue, settings


async def test_2000_concurrent_joins_get_unique_gap_free_positions(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    # Two clients, as two gateway nodes would be.
    other = connect(redis_url)
    try:
        q1, _ = await _queue(redis_client, redis_url)
        q2 = Queue(other, q1.settings)
        joins = [(q1 if i % 2 else q2).join() for i in range(2000)]
        results = await asyncio.gather(*joins)
    finally:
        await other.aclose()
    positions = sorted(j.position for j in results if j is not None)
    assert positions == list(range(1, 2001))
    assert len({j.epoch for j in results if j is not None}) == 1


async def test_idle_room_admits_at_once_but_a_burst_waits(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _queue(redis_client, redis_url, rate=5.0)
    pacer = make_pacer(queue, make_view(queue, settings), settings)
    await pacer.step()
    await asyncio.sleep(1.1)  # one second of credit: up to 5 admissions at once
    await pacer.step()
    joined = [await queue.join() for _ in range(10)]
    admitted = [j.admitted for j in joined if j is not None]
    assert admitted[:5] == [True] * 5, admitted
    assert admitted[5:] == [False] * 5, admitted


async def test_nobody_admitted_when_the_room_has_no_credit(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, _ = await _queue(redis_client, redis_url)
    joined = await queue.join()
    assert joined is not None and not joined.admitted and joined.position == 1


async def test_frontier_never_passes_last_position_or_the_cap(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _queue(redis_client, redis_url, rate=1000.0, max_active=7)
    for _ in range(20):
        await queue.join()
    pacer = make_pacer(queue, make_view(queue, settings), settings)
    for _ in range(5):
        await pacer.step()
        await asyncio.sleep(0.05)
    state = await queue.read()
    assert state is not None
    assert state.frontier == 7  # the cap, not the rate, limits
    await redis_client.hset(queue.keys.config, "max_active", 100)
    for _ in range(5):
        await pacer.step()
        await asyncio.sleep(0.05)
    state = await queue.read()
    assert state is not None and state.frontier == 20  # never past the last position


async def test_rate_accuracy_over_a_window(redis_client: aioredis.Redis, redis_url: str) -> None:
    rate = 40.0
    queue, settings = await _queue(redis_client, redis_url, rate=rate, max_active=100_000)
    async with redis_client.pipeline(transaction=False) as pipe:
        pipe.hset(queue.keys.state, "seq", 10_000)
        await pipe.execute()
    pacer = make_pacer(queue, make_view(queue, settings), settings)
    await pacer.step()
    start_state = await queue.read()
    assert start_state is not None
    started = time.monotonic()
    while time.monotonic() - started < 5.0:
        await pacer.step()
        await asyncio.sleep(settings.pacer_tick_s)
    await pacer.step()
    elapsed = time.monotonic() - started
    end_state = await queue.read()
    assert end_state is not None
    achieved = (end_state.frontier - start_state.frontier) / elapsed
    assert abs(achieved - rate) / rate < 0.05, achieved


async def test_one_pacer_acts_and_another_takes_over(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _queue(redis_client, redis_url)
    view = make_view(queue, settings)
    first, second = make_pacer(queue, view, settings), make_pacer(queue, view, settings)
    assert (await first.step()).holder  # type: ignore[union-attr]
    assert not (await second.step()).holder  # type: ignore[union-attr]
    # The holder dies: it stops renewing; the lease lapses within pacer_lease_s.
    deadline = time.monotonic() + settings.pacer_lease_s + 1
    while time.monotonic() < deadline:
        tick = await second.step()
        if tick is not None and tick.holder:
            break
        await asyncio.sleep(0.1)
    assert second.holder
    assert not (await first.step()).holder  # type: ignore[union-attr]


async def test_paused_room_admits_nobody(redis_client: aioredis.Redis, redis_url: str) -> None:
    queue, settings = await _queue(redis_client, redis_url, rate=1000.0)
    for _ in range(5):
        await queue.join()
    await redis_client.hset(queue.keys.config, "paused", "1")
    pacer = make_pacer(queue, make_view(queue, settings), settings)
    await pacer.step()
    await asyncio.sleep(0.1)
    await pacer.step()
    state = await queue.read()
    assert state is not None and state.frontier == 0


async def test_empty_redis_is_restored_from_a_workers_view(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _queue(redis_client, redis_url, rate=1000.0, max_active=3)
    view = make_view(queue, settings)
    for _ in range(10):
        await queue.join()
    pacer = make_pacer(queue, view, settings)
    await pacer.step()
    await asyncio.sleep(0.05)
    await pacer.step()
    before = await view.refresh()
    assert before is not None and before.frontier == 3 and before.seq == 10
    await redis_client.flushdb()
    after = await view.refresh()
    assert after is not None
    assert (after.frontier, after.epoch) == (3, before.epoch)
    # Places issued just before the reset are skipped, never handed out twice.
    assert after.seq >= 10
    joined = await queue.join()
    assert joined is not None and joined.position == after.seq + 1


async def test_a_pacer_back_after_a_gap_admits_one_second_not_a_flood(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _queue(redis_client, redis_url, rate=10.0, max_active=100_000)
    await redis_client.hset(queue.keys.state, mapping={"seq": 1000, "credit": 0})
    pacer = make_pacer(queue, make_view(queue, settings), settings)
    await pacer.step()
    # As after a takeover or an outage: the last tick was a minute ago.
    last = int(await redis_client.hget(queue.keys.state, "last_ms") or 0)
    await redis_client.hset(queue.keys.state, "last_ms", last - 60_000)
    tick = await pacer.step()
    assert tick is not None and tick.holder
    assert tick.advanced <= 10


async def test_pacer_and_view_outlive_redis_error_replies(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue, settings = await _queue(redis_client, redis_url, rate=100.0)
    for _ in range(5):
        await queue.join()
    # A reply error (here WRONGTYPE; in life BUSY, MISCONF, TRYAGAIN...) on every tick.
    await redis_client.set(queue.keys.config, "not a hash")
    view = make_view(queue, settings)
    pacer = make_pacer(queue, view, settings)
    tasks = [asyncio.create_task(pacer.run()), asyncio.create_task(view.run())]
    try:
        await asyncio.sleep(0.3)
        assert not any(t.done() for t in tasks)
        assert not view.healthy
        await redis_client.delete(queue.keys.config)
        await asyncio.sleep(0.5)
        state = await queue.read()
        assert state is not None and state.frontier == 5
        assert view.healthy
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_worker_that_never_saw_the_line_lets_one_that_did_restore_it() -> None:
    from waitroom.devtools.embedded_redis import EmbeddedRedis

    with EmbeddedRedis() as server:
        settings = make_settings(server.url)
        veteran_client, newcomer_client = connect(server.url), connect(server.url)
        try:
            veteran = make_view(Queue(veteran_client, settings.line()), settings)
            await veteran.queue.init()
            for _ in range(7):
                await veteran.queue.join()
            known = await veteran.refresh()
            assert known is not None
            server.stop()  # an outage; a new worker starts during it
            newcomer = make_view(Queue(newcomer_client, settings.line()), settings)
            assert await newcomer.refresh() is None
            server.start()  # back, and empty
            assert await newcomer.refresh() is None  # it does not start a new line
            restored = await veteran.refresh()
            assert restored is not None and restored.epoch == known.epoch
            seen = await newcomer.refresh()
            assert seen is not None and seen.epoch == known.epoch and seen.seq >= 7
        finally:
            await veteran_client.aclose()
            await newcomer_client.aclose()


async def test_a_simulated_clock_drives_pacing_instead_of_redis_time(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    # `stress simulate` replays hours of a release in seconds through these scripts.
    queue = Queue(redis_client, make_settings(redis_url, rate=100.0, max_active=10**6).line())
    t0 = 1_000_000_000_000
    await queue.init(now_ms=t0)
    for _ in range(1000):
        await queue.join(now_ms=t0)
    admitted = 0
    for step in range(1, 6):  # five simulated seconds, no real time passes
        tick = await queue.tick("sim", now_ms=t0 + step * 1000)
        assert tick is not None and tick.holder
        admitted += tick.advanced
    assert admitted == 500
    assert tick.frontier == 500
