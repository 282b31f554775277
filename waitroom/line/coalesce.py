"""Many callers' Redis steps, one round trip: the door's batches.

A spike brings hundreds of arrivals a second to each worker. One script call per
arrival made Redis round trips, the pool's connections and redis-py's per-call
machinery the larger part of a join's cost, and a dry pool let spends go through
unchecked. A ``Coalescer`` gathers the calls made while its previous batch is in
flight (or in the same turn of the event loop when none is) and hands them to one
``flush`` together, in the order they were made; each caller gets its own reply.

At most one batch is in flight per coalescer, so a worker holds a bounded number of
Redis connections whatever the crowd, and batches grow by themselves with the
load: under a trickle every call is flushed at the next turn of the loop, without
any added wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

In = TypeVar("In")
Out = TypeVar("Out")

# A bound on one batch: one Lua call should not hold Redis for long (a join batch of
# this size runs in well under a millisecond).
MAX_BATCH = 512


class Coalescer(Generic[In, Out]):
    def __init__(
        self,
        flush: Callable[[Sequence[In]], Awaitable[Sequence[Out]]],
        *,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        # Told each batch's size (for /metrics: how much coalescing saves).
        self._on_batch = on_batch
        self._pending: list[tuple[In, asyncio.Future[Out]]] = []
        self._running = False
        # Held so the event loop's weak reference is not the only one (asyncio drops
        # a task nobody holds, mid-flight).
        self._task: asyncio.Task[None] | None = None
        # Figures for the stress reports: how many batches, how many calls in them.
        self.batches = 0
        self.calls = 0

    async def call(self, item: In) -> Out:
        """``flush([item, …])``'s reply for ``item``; its exception if the batch failed."""
        future: asyncio.Future[Out] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._running:
            self._running = True
            # At the next turn, not now: every caller of this turn joins the batch.
            asyncio.get_running_loop().call_soon(self._start)
        return await future

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="waitroom-coalesce")

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                self.batches += 1
                self.calls += len(batch)
                if self._on_batch is not None:
                    self._on_batch(len(batch))
                try:
                    replies = await self._flush([item for item, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:
                    for _, future in batch:
                        future.cancel()
                    raise
                if len(replies) != len(batch):
                    error = RuntimeError(f"batch of {len(batch)} got {len(replies)} replies")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                for (_, future), reply in zip(batch, replies, strict=True):
                    if not future.done():  # its caller may have given up
                        future.set_result(reply)
        finally:
            self._running = False
            # A cancelled drain must not strand callers that came meanwhile.
            for _, future in self._pending:
                if not future.done():
                    future.cancel()
            self._pending = []
