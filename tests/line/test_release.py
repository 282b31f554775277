"""A scheduled release: the pre-queue's random order, in the real queue scripts."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import redis.asyncio as aioredis

from tests.support.gateway_support import make_settings
from waitroom.line import release
from waitroom.line.state import Queue
from waitroom.room.estimate import place_of

T0 = 1_900_000_000_000  # a simulated clock, ms


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 100, 1000, 4097])
def test_permutation_is_a_bijection_on_the_pre_queue(size: int) -> None:
    places = [release.permute("seed-a", size, k) for k in range(1, size + 1)]
    assert sorted(places) == list(range(1, size + 1))


def test_order_is_reproducible_from_the_seed_and_differs_between_seeds() -> None:
    assert release.order("s1", 500) == release.order("s1", 500)
    assert release.order("s1", 500) != release.order("s2", 500)
    assert release.order("s1", 500) != list(range(1, 501))


def test_arriving_early_gives_no_advantage() -> None:
    # Over many seeds, the first and the last arrival of a pre-queue of 10 each land
    # in the front half about half the time: arrival order says nothing of place.
    size, seeds = 10, 2000
    first_front = sum(release.permute(f"s{i}", size, 1) <= size // 2 for i in range(seeds))
    last_front = sum(release.permute(f"s{i}", size, size) <= size // 2 for i in range(seeds))
    assert 0.45 * seeds < first_front < 0.55 * seeds
    assert 0.45 * seeds < last_front < 0.55 * seeds
    # Every place is equally likely for the first arrival (within sampling noise).
    counts = Counter(release.permute(f"s{i}", size, 1) for i in range(seeds))
    assert set(counts) == set(range(1, size + 1))
    assert max(counts.values()) < 2.0 * seeds / size


def test_commitment_binds_the_seed() -> None:
    seed = release.new_seed()
    assert release.commitment(seed) == release.commitment(seed)
    assert release.commitment(seed) != release.commitment(seed + "0")


def test_release_order_command_prints_the_audited_order() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "waitroom",
            "release-order",
            "--seed",
            "abc",
            "--first",
            "6",
            "--last",
            "10",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [tuple(int(x) for x in line.split("\t")) for line in out.splitlines()]
    assert [place for place, _ in rows] == [6, 7, 8, 9, 10]
    # Each row names the pre-queue position that got the place: the permutation.
    for place, position in rows:
        assert release.permute("abc", 5, position - 5) == place - 5


async def _configure(queue: Queue, **changes: str) -> None:
    done = await queue.configure(changes, {"at": 0, "session": "t", "address": "test"}, 100)
    assert done.ok, done


async def test_pre_queue_waits_until_the_release_then_is_admitted_in_drawn_order(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue = Queue(redis_client, make_settings(redis_url, rate=10.0, max_active=10**6).line())
    await queue.init(now_ms=T0)
    # Two students were in line before the release was scheduled.
    early = [await queue.join(now_ms=T0) for _ in range(2)]
    release_at = T0 + 60_000
    await _configure(queue, release_at=str(release_at))
    prequeue = [await queue.join(now_ms=T0 + 1000 + i) for i in range(50)]
    assert all(j is not None and not j.admitted for j in [*early, *prequeue])
    # Before T nothing moves, however much time passes.
    for step in range(1, 5):
        tick = await queue.tick("p", now_ms=T0 + step * 10_000)
        assert tick is not None and tick.advanced == 0 and tick.frontier == 0
    state = await queue.read()
    assert state is not None and state.before_release and state.release_base == 2
    assert place_of(10, state) is None  # no place yet in the pre-queue
    assert place_of(2, state) == 2  # in line before the release was scheduled

    # At T the pre-queue is fixed at the positions issued so far.
    tick = await queue.tick("p", now_ms=release_at)
    late = await queue.join(now_ms=release_at + 1)
    state = await queue.read()
    assert state is not None and state.released_n == 52 and not state.before_release
    places = [place_of(p, state) for p in range(3, 53)]
    assert sorted(places) == list(range(3, 53))  # type: ignore[type-var]
    assert places != list(range(3, 53))
    assert late is not None and place_of(late.position, state) == 53  # behind the pre-queue

    # Admission follows places: after frontier F, exactly places <= F are in.
    # The first tick at T had at most one second of credit (10 admissions).
    assert tick is not None and tick.frontier == 10
    tick = await queue.tick("p", now_ms=release_at + 500)
    assert tick is not None and tick.frontier == 15
    admitted = {p for p in range(1, 54) if (place_of(p, state) or 0) <= tick.frontier}
    assert len(admitted) == tick.frontier
    assert {1, 2} <= admitted  # the two who were in line before the release


async def test_a_new_release_waits_until_the_last_pre_queue_is_through(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue = Queue(redis_client, make_settings(redis_url, rate=5.0, max_active=10**6).line())
    await queue.init(now_ms=T0)
    await _configure(queue, release_at=str(T0 + 1000))
    for _ in range(20):
        await queue.join(now_ms=T0)
    await queue.tick("p", now_ms=T0 + 1000)
    await queue.tick("p", now_ms=T0 + 2000)  # 5 of 20 admitted
    busy = await queue.configure({"release_at": str(T0 + 99_000)}, {"at": 0}, 100)
    assert not busy.ok and busy.reason == "prequeue_busy" and busy.size == 20
    assert 0 < busy.frontier < 20
    state = await queue.read()
    assert state is not None and state.release_at_ms == T0 + 1000  # unchanged
    for second in range(3, 10):
        await queue.tick("p", now_ms=T0 + second * 1000)
    # Through: a new release starts a new pre-queue with a new seed.
    seed_before = state.release_seed
    await _configure(queue, release_at=str(T0 + 99_000))
    state = await queue.read()
    assert state is not None and state.before_release and state.release_base == 20
    assert state.release_seed != seed_before


async def test_moving_the_release_keeps_the_pre_queue_and_its_seed(
    redis_client: aioredis.Redis, redis_url: str
) -> None:
    queue = Queue(redis_client, make_settings(redis_url).line())
    await queue.init(now_ms=T0)
    await _configure(queue, release_at=str(T0 + 60_000))
    before = await queue.read()
    await _configure(queue, release_at=str(T0 + 120_000))
    after = await queue.read()
    assert before is not None and after is not None
    assert after.release_at_ms == T0 + 120_000
    assert (after.release_seed, after.release_base) == (before.release_seed, before.release_base)
    entries = await queue.audit(10)
    assert [e["field"] for e in entries][:1] == ["release_at"]
    assert entries[0]["old"] == str(T0 + 60_000) and entries[0]["new"] == str(T0 + 120_000)
