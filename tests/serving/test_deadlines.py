"""Bucketed deadlines: waits expire at their timeout (within a tick), never before."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref

import pytest

from bcd.serving._deadlines import TICK_S, CancelAfter, fail_after


def test_a_pending_future_fails_with_timeout_error_after_its_timeout() -> None:
    async def scenario() -> float:
        future = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        fail_after(future, 0.1)
        with pytest.raises(TimeoutError):
            await future
        return time.monotonic() - started

    waited = asyncio.run(scenario())
    assert 0.1 <= waited < 0.1 + TICK_S + 0.2


def test_a_future_done_in_time_keeps_its_result_and_is_not_held() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        fail_after(future, 0.05)
        loop.call_later(0.01, future.set_result, "scored")
        assert await future == "scored"
        await asyncio.sleep(0.05 + 2 * TICK_S)  # the deadline passes
        assert future.result() == "scored"
        # Only a weak reference waits in the bucket: a finished future can go.
        collected = loop.create_future()
        fail_after(collected, 60)
        collected.set_result(None)
        reference = weakref.ref(collected)
        del collected
        gc.collect()
        assert reference() is None

    asyncio.run(scenario())


def test_cancel_after_turns_an_overrun_into_timeout_error() -> None:
    async def scenario() -> None:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with CancelAfter(0.05):
                await asyncio.sleep(5)
        assert time.monotonic() - started < 1
        async with CancelAfter(0.05):
            await asyncio.sleep(0.001)
        # The block ended in time: its deadline passing later cancels nothing.
        await asyncio.sleep(0.05 + 2 * TICK_S)
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0

    asyncio.run(scenario())


def test_cancel_after_lets_an_outside_cancellation_through() -> None:
    async def guarded() -> None:
        async with CancelAfter(30):
            await asyncio.sleep(5)

    async def scenario() -> None:
        task = asyncio.ensure_future(guarded())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
