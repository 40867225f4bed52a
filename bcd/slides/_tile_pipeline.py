"""The tile pipeline: a reader thread cuts tissue tiles into batches, the caller scores them.

Reading a band of the slide (decoding its TIFF/JPEG tiles or PNG rows,
resampling it to the model's resolution) and cutting its tissue tiles into
contiguous batches runs on one producer thread; the analysis thread scores
the batches as they come. A bounded queue between the two keeps memory
bounded (``depth`` batches waiting, one being cut, one being scored, plus the
band being read), so the slide is never held whole at any level.

Failures and cancellation cross the queue both ways: an error raised while
reading (a cut file, say) is re-raised in the consumer, and a consumer that
stops early (an error in ``predict``, a cancelled analysis) stops the producer
at its next batch and waits for its thread to end, so no thread outlives the
analysis.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np

from bcd.slides._grid import TileGrid, band_tiles, read_band
from bcd.slides.readers import BaseSlideReader

#: One batch: grid rows, grid columns and the uint8 ``(N, tile, tile, 3)`` tiles.
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]

#: Bytes of slide read per band, at most (a band holds at least one grid row).
BAND_BYTES = 48 * 1024**2
#: Batches the reader thread may have ready before it waits for the scorer.
DEPTH = 2
#: The reader thread's name (one per running analysis).
THREAD_NAME = "slide-tile-reader"

_DONE = object()
_POLL_S = 0.1


def tissue_batches(
    reader: BaseSlideReader, grid: TileGrid, tissue: np.ndarray, batch_size: int
) -> Iterator[Batch]:
    """Yield ``(rows, cols, tiles)`` batches of the tiles marked in ``tissue``, band by band.

    Bands span the slide's width and as many grid rows as fill about one batch
    (bounded by :data:`BAND_BYTES`); rows without tissue are never read. Every
    batch but the last holds exactly ``batch_size`` tiles, C-contiguous.

    Args:
        reader: The open slide.
        grid: The tile grid.
        tissue: bool ``(rows, cols)``, the tiles to read.
        batch_size: Tiles per batch.

    Yields:
        Grid rows, grid columns and tiles of one batch, in row-major order.
    """
    band_width = (grid.cols - 1) * grid.stride + grid.tile_size
    row_bytes = max(grid.stride, grid.tile_size) * band_width * 3
    rows_per_band = max(1, min(BAND_BYTES // row_bytes, -(-batch_size // max(grid.cols, 1))))
    tissue_rows = np.flatnonzero(tissue.any(axis=1))
    pending: list[Batch] = []
    pending_count = 0
    index = 0
    while index < len(tissue_rows):
        first = int(tissue_rows[index])
        last = min(first + rows_per_band, grid.rows)
        band_rows = last - first
        tiles = band_tiles(read_band(reader, grid, first, band_rows), grid, band_rows)
        rows, cols = np.nonzero(tissue[first:last])
        pending.append((rows + first, cols, tiles[rows, cols]))
        pending_count += len(rows)
        while pending_count >= batch_size:
            batch, pending = _take(pending, batch_size)
            pending_count -= batch_size
            yield batch
        while index < len(tissue_rows) and tissue_rows[index] < last:
            index += 1
    if pending_count:
        yield _take(pending, pending_count)[0]


def _take(pending: list[Batch], count: int) -> tuple[Batch, list[Batch]]:
    """The first ``count`` tiles of ``pending`` as one contiguous batch, and the rest."""
    rows = np.concatenate([part[0] for part in pending])
    cols = np.concatenate([part[1] for part in pending])
    tiles = np.concatenate([part[2] for part in pending])
    rest = [(rows[count:], cols[count:], tiles[count:])] if len(rows) > count else []
    return (rows[:count], cols[:count], np.ascontiguousarray(tiles[:count])), rest


def prefetch(batches: Iterator[Batch], depth: int = DEPTH) -> Iterator[Batch]:
    """Run ``batches`` on a producer thread, at most ``depth`` items ahead of the consumer.

    Args:
        batches: The items to produce (a generator, run on the new thread only).
        depth: Items that may wait in the queue (at least 1).

    Yields:
        The items of ``batches``, in order.

    Raises:
        Whatever ``batches`` raised, once the items before it are consumed.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not hand_over(item) or stop.is_set():
                    return  # the consumer is gone: read nothing more
            hand_over(_DONE)
        except BaseException as error:  # handed to the consumer, re-raised there
            hand_over(error)
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # a generator's own cleanup runs on its thread

    worker = threading.Thread(target=produce, name=THREAD_NAME, daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        while worker.is_alive():  # a producer blocked on a full queue wakes within _POLL_S
            try:
                buffer.get_nowait()
            except queue.Empty:
                worker.join(timeout=_POLL_S / 2)
