"""Dynamic micro-batching: concurrent requests share one inference call.

Requests put their (already normalised) arrays on one queue; each replica has
a worker thread that takes the first waiting item, then keeps taking items
until the batch holds ``max_batch_size`` images or ``max_wait`` has passed
since it began collecting, and runs them in one call. ONNX Runtime releases
the GIL while it computes, so the replicas run in parallel with each other
and with the HTTP event loop. A worker only waits for more work when the last
batch showed overlapping requests, so a lone client pays no batching delay.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from bcd.errors import NotReadyError

logger = logging.getLogger(__name__)

# infer(replica_index, batch (N, C, H, W) float32) -> probabilities (N, K)
InferFn = Callable[[int, np.ndarray], np.ndarray]
# on_batch(images_in_batch, seconds_spent_in_inference)
BatchHook = Callable[[int, float], None]


class _Work:
    __slots__ = ("batch", "future")

    def __init__(self, batch: np.ndarray) -> None:
        self.batch = batch
        self.future: Future[np.ndarray] = Future()


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
        """Queue a ``(N, C, H, W)`` batch; returns one future per chunk, in order.

        Raises:
            NotReadyError: The batcher is closed (its model was unloaded).
        """
        size = self._max_batch_size
        works = [_Work(batch[start : start + size]) for start in range(0, len(batch), size)]
        with self._lock:
            if self._closed:
                raise NotReadyError("this model was unloaded; send the request again")
            for work in works:
                self._queue.put(work)
        return [work.future for work in works]

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
        size = len(first.batch)
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
            if size + len(item.batch) > self._max_batch_size:
                return works, item, False
            works.append(item)
            size += len(item.batch)
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
        # Skip work whose caller gave up (timeout, disconnect); the rest can
        # no longer be cancelled, so setting their results cannot fail.
        works = [work for work in works if work.future.set_running_or_notify_cancel()]
        if not works:
            return
        batch = works[0].batch if len(works) == 1 else np.concatenate([w.batch for w in works])
        started = time.perf_counter()
        try:
            probabilities = self._infer(replica, batch)
        except BaseException as error:
            logger.exception("inference failed on a batch of %d images", len(batch))
            for work in works:
                work.future.set_exception(error)
            return
        elapsed = time.perf_counter() - started
        offset = 0
        for work in works:
            count = len(work.batch)
            work.future.set_result(probabilities[offset : offset + count])
            offset += count
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), elapsed)
            except Exception:
                logger.exception("the batch metrics hook failed")
