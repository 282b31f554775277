"""The one background loop: steps go on after a failure, and a stop is never lost."""

from __future__ import annotations

import asyncio
import logging

import pytest

from waitroom.shared.loops import every


async def test_a_failed_step_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    errors: list[int] = []

    async def step() -> None:
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("boom")

    task = asyncio.create_task(
        every(0.001, step, what="test step", on_error=lambda: errors.append(len(calls)))
    )
    with caplog.at_level(logging.ERROR):
        while len(calls) < 4:
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert errors == [2]
    assert "waitroom: test step failed" in caplog.text


async def test_a_cancellation_a_step_swallowed_still_stops_the_loop() -> None:
    started = asyncio.Event()

    async def step() -> None:
        # As redis-py may: the cancellation arrives mid-call and comes out as an
        # ordinary error, which the loop survives by design.
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            raise ConnectionError("connection closed mid-command") from None

    task = asyncio.create_task(every(10, step, what="test step"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
