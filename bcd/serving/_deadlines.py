"""Timeouts for many concurrent asyncio waits, with one loop timer per tick.

``asyncio.timeout`` schedules and cancels one loop timer per use, about 13 µs
under uvloop. A scoring request bounds two waits (its upload and its scoring),
so at a thousand requests per second that alone would take a tenth of the
event loop's time. Here a bounded wait costs one entry in the bucket of its
deadline, rounded up to :data:`TICK_S`; one timer per bucket expires whatever
is still pending then. A wait may therefore last up to one tick longer than
its timeout, never shorter.

Two kinds of wait are bounded: an asyncio future (it fails with
``TimeoutError``: :func:`fail_after`) and a stretch of a task's code
(:class:`CancelAfter`, like ``asyncio.timeout``, whose ``TimeoutError`` it raises).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from types import TracebackType
from typing import Any

# Deadlines are rounded up to a multiple of this many seconds.
TICK_S = 0.05

_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = (
    weakref.WeakKeyDictionary()
)
_last: _Deadlines | None = None  # the buckets used last, looked up without the dictionary


class CancelAfter:
    """``async with CancelAfter(seconds):`` — ``TimeoutError`` if the block outlasts them.

    Must be entered in a task of the running loop. The block's task is
    cancelled at the deadline and the cancellation turned into
    ``TimeoutError`` on the way out, as ``asyncio.timeout`` does; a
    cancellation from elsewhere goes through unchanged.
    """

    __slots__ = ("_expired", "_task", "_timeout_s")

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._task: asyncio.Task[Any] | None = None
        self._expired = False

    async def __aenter__(self) -> CancelAfter:
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task(loop)
        if self._task is None:
            raise RuntimeError("CancelAfter must be used inside a task")
        _deadlines(loop).add(self, self._timeout_s)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None  # the timer now finds nothing to cancel
        if self._expired and kind is asyncio.CancelledError:
            assert task is not None
            if task.uncancel() == 0:
                raise TimeoutError from error

    def expire(self) -> None:
        """Called by the deadline timer: cancel the task if it is still inside the block."""
        if self._task is not None:
            self._expired = True
            self._task.cancel()


def fail_after(future: asyncio.Future[Any], timeout_s: float) -> None:
    """Fail ``future`` with ``TimeoutError`` unless it is done within ``timeout_s``.

    Call from the future's loop. Only a weak reference is kept, so a finished
    future is not held until its deadline.
    """
    _deadlines(future.get_loop()).add(weakref.ref(future), timeout_s)


class _Deadlines:
    """The buckets of one event loop: deadline slot → what expires then."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, list[Any]] = {}

    def add(self, entry: Any, timeout_s: float) -> None:
        slot = math.ceil((self._loop.time() + timeout_s) / TICK_S)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = []
            self._loop.call_at(slot * TICK_S, self._expire, slot)
        bucket.append(entry)

    def _expire(self, slot: int) -> None:
        for entry in self._buckets.pop(slot, ()):
            if isinstance(entry, weakref.ref):
                future = entry()
                if future is not None and not future.done():
                    future.set_exception(TimeoutError())
            else:
                entry.expire()


def _deadlines(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    global _last
    last = _last  # read once: other threads may run other loops
    if last is not None and last._loop is loop:  # the common case: one serving loop
        return last
    deadlines = _by_loop.get(loop)
    if deadlines is None:
        deadlines = _by_loop[loop] = _Deadlines(loop)
    _last = deadlines
    return deadlines
