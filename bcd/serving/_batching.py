"""Dynamic micro-batching: concurrent requests share one inference call.

Requests put their arrays (uint8 patches at the model's input size) on one
queue; each replica has a worker thread that takes the first waiting item,
then keeps taking items until the batch holds ``max_batch_size`` images or
``max_wait`` has passed since it began collecting, and runs them in one call.
ONNX Runtime releases the GIL while it computes, so the replicas run in
parallel with each other and with the HTTP event loop. A worker only waits for
more work when the last batch showed overlapping requests, so a lone client
pays no batching delay.

A request may also queue a *deferred* item (:meth:`MicroBatcher.submit_deferred`):
a function that produces its array, run by the worker just before the batch's
inference call. The HTTP event loop then does no decoding at all, and the
replicas decode in parallel; a failure of one item fails only that request.

Asyncio callers (:meth:`MicroBatcher.submit_async`,
:meth:`MicroBatcher.submit_deferred_async`) get plain asyncio futures of their
own loop. The worker settles all of a batch's asyncio futures with one
``call_soon_threadsafe`` per loop and batch, not one cross-thread wake-up (and
one ``concurrent.futures.Future`` with its lock and condition) per request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from bcd.errors import NotReadyError
from bcd.serving._deadlines import fail_after

logger = logging.getLogger(__name__)

# infer(replica_index, batch (N, ...) of requests' arrays) -> probabilities (N, K)
InferFn = Callable[[int, np.ndarray], np.ndarray]
# on_batch(images_in_batch, seconds_spent_in_inference)
BatchHook = Callable[[int, float], None]


class _Work:
    """One queued item: its array (or the ``prepare`` that makes it) and its caller's future.

    Blocking callers wait on ``future`` (a ``concurrent.futures.Future``);
    asyncio callers on ``waiter``, a future of ``loop`` that only that loop's
    thread settles.
    """

    __slots__ = ("batch", "count", "future", "loop", "prepare", "waiter")

    def __init__(
        self,
        batch: np.ndarray | None,
        count: int,
        prepare: Callable[[], np.ndarray] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.batch = batch
        self.count = count
        self.prepare = prepare
        self.loop = loop
        self.future: Future[np.ndarray] | None = None
        self.waiter: asyncio.Future[np.ndarray] | None = None
        if loop is None:
            self.future = Future()
        else:
            self.waiter = loop.create_future()

    def claim(self) -> bool:
        """Whether the caller still waits (``False``: it gave up; skip this item)."""
        if self.future is not None:
            return self.future.set_running_or_notify_cancel()
        assert self.waiter is not None
        # Read from the worker thread: at worst an item cancelled just now is
        # still scored, and its result dropped when settled.
        return not self.waiter.done()


def _settle_waiters(outcomes: list[tuple[asyncio.Future[np.ndarray], object, bool]]) -> None:
    """Runs on the waiters' loop: hand each its result, or its error when flagged."""
    for waiter, value, failed in outcomes:
        if waiter.done():  # cancelled by a timeout or a disconnect meanwhile
            continue
        if failed:
            waiter.set_exception(value)  # type: ignore[arg-type]
        else:
            waiter.set_result(value)  # type: ignore[arg-type]


class _Outcomes:
    """A batch's results, handed to their callers: blocking ones at once, asyncio
    ones with one ``call_soon_threadsafe`` per loop in :meth:`send`."""

    __slots__ = ("_by_loop",)

    def __init__(self) -> None:
        self._by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Future[np.ndarray], object, bool]]
        ] = {}

    def result(self, work: _Work, value: np.ndarray) -> None:
        self._add(work, value, False)

    def error(self, work: _Work, error: BaseException) -> None:
        self._add(work, error, True)

    def _add(self, work: _Work, value: object, failed: bool) -> None:
        if work.future is not None:
            if failed:
                work.future.set_exception(value)  # type: ignore[arg-type]
            else:
                work.future.set_result(value)  # type: ignore[arg-type]
            return
        assert work.loop is not None and work.waiter is not None
        self._by_loop.setdefault(work.loop, []).append((work.waiter, value, failed))

    def send(self) -> None:
        for loop, outcomes in self._by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_waiters, outcomes)
            except RuntimeError:  # that loop is closed: nobody waits any more
                logger.debug("dropped %d results for a closed event loop", len(outcomes))
        self._by_loop.clear()


class MicroBatcher:
    """Collects submitted arrays into batches and runs them on worker replicas.

    Thread safety: :meth:`submit` may be called from any thread; results come
    back through :class:`concurrent.futures.Future` objects.

    Args:
        infer: Runs one batch on one replica; called from that replica's thread only.
        replicas: Number of worker threads (one per inference session).
        max_batch_size: Most images per inference call; bigger submissions are
            split into chunks of this size.
        max_wait_s: Longest time a worker waits for more work once it has some.
        on_batch: Called after every inference call (metrics).
        name: Names the worker threads, for debugging.
    """

    def __init__(
        self,
        infer: InferFn,
        *,
        replicas: int = 1,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        on_batch: BatchHook | None = None,
        name: str = "model",
    ) -> None:
        if replicas < 1 or max_batch_size < 1 or max_wait_s < 0:
            raise ValueError("replicas and max_batch_size must be >= 1, max_wait_s >= 0")
        self._infer = infer
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        # None is the stop signal, one per worker, queued behind pending work.
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._closed = False
        self._concurrent = False
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(
                target=self._work, args=(index,), name=f"bcd-{name}-{index}", daemon=True
            )
            for index in range(replicas)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, batch: np.ndarray) -> list[Future[np.ndarray]]:
        """Queue a batch of ``N`` items; returns one future per chunk, in order.

        Raises:
            NotReadyError: The batcher is closed (its model was unloaded).
        """
        works = self._chunks(batch, None)
        self._put(works)
        return [work.future for work in works if work.future is not None]

    def submit_async(
        self, batch: np.ndarray, timeout_s: float | None = None
    ) -> list[asyncio.Future[np.ndarray]]:
        """:meth:`submit` from a running event loop: asyncio futures of that loop.

        Args:
            batch: ``N`` items.
            timeout_s: Each future fails with ``TimeoutError`` unless it has
                its result within this many seconds (``None``: no limit).

        Raises:
            NotReadyError: The batcher is closed (its model was unloaded).
        """
        works = self._chunks(batch, asyncio.get_running_loop())
        self._put(works)
        waiters = [work.waiter for work in works if work.waiter is not None]
        if timeout_s is not None:
            for waiter in waiters:
                fail_after(waiter, timeout_s)
        return waiters

    def _chunks(self, batch: np.ndarray, loop: asyncio.AbstractEventLoop | None) -> list[_Work]:
        size = self._max_batch_size
        return [
            _Work(chunk, len(chunk), loop=loop)
            for chunk in (batch[start : start + size] for start in range(0, len(batch), size))
        ]

    def submit_deferred(self, prepare: Callable[[], np.ndarray], count: int) -> Future[np.ndarray]:
        """Queue an item whose array ``prepare()`` makes on the worker, just before inference.

        Args:
            prepare: Returns exactly ``count`` items; whatever it raises becomes
                the future's exception (the rest of the batch is unaffected).
            count: Items it makes, at most ``max_batch_size``.

        Raises:
            ValueError: ``count`` is over ``max_batch_size``.
            NotReadyError: The batcher is closed (its model was unloaded).
        """
        work = self._deferred(prepare, count, None)
        assert work.future is not None
        return work.future

    def submit_deferred_async(
        self, prepare: Callable[[], np.ndarray], count: int, timeout_s: float | None = None
    ) -> asyncio.Future[np.ndarray]:
        """:meth:`submit_deferred` from a running event loop: an asyncio future of that loop.

        ``timeout_s`` bounds the wait as in :meth:`submit_async`.

        Raises:
            ValueError: ``count`` is over ``max_batch_size``.
            NotReadyError: The batcher is closed (its model was unloaded).
        """
        work = self._deferred(prepare, count, asyncio.get_running_loop())
        assert work.waiter is not None
        if timeout_s is not None:
            fail_after(work.waiter, timeout_s)
        return work.waiter

    def _deferred(
        self,
        prepare: Callable[[], np.ndarray],
        count: int,
        loop: asyncio.AbstractEventLoop | None,
    ) -> _Work:
        if not 1 <= count <= self._max_batch_size:
            raise ValueError(f"a deferred item holds 1 to {self._max_batch_size} images")
        work = _Work(None, count, prepare, loop)
        self._put([work])
        return work

    @property
    def max_batch_size(self) -> int:
        """Most images per inference call."""
        return self._max_batch_size

    def _put(self, works: list[_Work]) -> None:
        with self._lock:
            if self._closed:
                raise NotReadyError("this model was unloaded; send the request again")
            for work in works:
                self._queue.put(work)

    def close(self) -> None:
        """Stop accepting work, finish what is queued, and stop the workers."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for _ in self._threads:
                self._queue.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def _collect(self, first: _Work) -> tuple[list[_Work], _Work | None, bool]:
        """``first`` plus whatever fits.

        Returns:
            The batch, an item that did not fit (first of the next batch), and
            whether the stop signal was met.
        """
        works = [first]
        size = first.count
        deadline = None
        while size < self._max_batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                if not self._concurrent:
                    break
                if deadline is None:
                    deadline = time.monotonic() + self._max_wait_s
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is None:
                return works, None, True
            if size + item.count > self._max_batch_size:
                return works, item, False
            works.append(item)
            size += item.count
        return works, None, False

    def _work(self, replica: int) -> None:
        carry: _Work | None = None
        while True:
            item = carry if carry is not None else self._queue.get()
            if item is None:
                return
            works, carry, stop = self._collect(item)
            # Waiting for company only pays when requests overlap; a lone
            # client would just pay max_wait on every call.
            self._concurrent = len(works) > 1 or carry is not None
            try:
                self._run(replica, works)
            except Exception:  # a worker must outlive any one batch
                logger.exception("a batch of %d requests failed", len(works))
            if stop:
                return

    def _run(self, replica: int, works: list[_Work]) -> None:
        outcomes = _Outcomes()
        try:
            self._score(replica, works, outcomes)
        finally:
            outcomes.send()

    def _score(self, replica: int, works: list[_Work], outcomes: _Outcomes) -> None:
        # Skip work whose caller gave up (timeout, disconnect); the rest can
        # no longer be cancelled, so setting their results cannot fail.
        works = [work for work in works if work.claim()]
        works = [work for work in works if self._prepared(work, outcomes)]
        if not works:
            return
        arrays = [work.batch for work in works if work.batch is not None]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        started = time.perf_counter()
        try:
            probabilities = self._infer(replica, batch)
        except BaseException as error:
            logger.exception("inference failed on a batch of %d images", len(batch))
            for work in works:
                outcomes.error(work, error)
            return
        elapsed = time.perf_counter() - started
        offset = 0
        for work in works:
            outcomes.result(work, probabilities[offset : offset + work.count])
            offset += work.count
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), elapsed)
            except Exception:
                logger.exception("the batch metrics hook failed")

    @staticmethod
    def _prepared(work: _Work, outcomes: _Outcomes) -> bool:
        """Run a deferred item's ``prepare``; ``False`` (its caller told) if it raised."""
        if work.prepare is None:
            return True
        try:
            batch = work.prepare()
            if len(batch) != work.count:
                raise RuntimeError(f"a deferred item made {len(batch)} images, not {work.count}")
        except BaseException as error:
            outcomes.error(work, error)
            return False
        work.batch, work.prepare = batch, None
        return True
