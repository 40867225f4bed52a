"""The tile pipeline: bounded read-ahead, errors and cancellation in both directions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

from bcd.errors import InvalidInputError
from bcd.slides import AnalysisOptions, ArraySlideReader, analyze_slide, plan_grid, read_tile
from bcd.slides._tile_pipeline import THREAD_NAME, prefetch, tissue_batches
from tests.slides.conftest import darkness_predict, synthetic_slide


def _readers_alive() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


def _wait_for_no_reader(seconds: float = 2.0) -> list[threading.Thread]:
    deadline = time.monotonic() + seconds
    while _readers_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return _readers_alive()


class CountingReader(ArraySlideReader):
    """Counts band reads (regions one grid row high); fails from ``fail_at_y`` on."""

    def __init__(self, image: np.ndarray, fail_at_y: int | None = None) -> None:
        super().__init__(image, mpp=4.0)
        self.band_reads: list[int] = []
        self.fail_at_y = fail_at_y

    def read_region(self, x: int, y: int, width: int, height: int, level: int = 0) -> np.ndarray:
        if height == 50:
            self.band_reads.append(y)
            if self.fail_at_y is not None and y >= self.fail_at_y:
                raise InvalidInputError("TIFF segment 7 could not be decoded")
        return super().read_region(x, y, width, height, level)


def test_batches_hold_exactly_the_tissue_tiles_in_contiguous_full_batches() -> None:
    image = synthetic_slide(rows=12, cols=16)
    reader = ArraySlideReader(image, mpp=4.0)
    grid = plan_grid(reader)
    tissue = np.zeros((grid.rows, grid.cols), dtype=bool)
    tissue[2:10, 2:14] = True
    tissue[5, 0] = True
    batches = list(tissue_batches(reader, grid, tissue, batch_size=7))
    sizes = [len(tiles) for _, _, tiles in batches]
    assert sizes[:-1] == [7] * (len(batches) - 1) and sum(sizes) == int(tissue.sum())
    seen = np.zeros_like(tissue)
    for rows, cols, tiles in batches:
        assert tiles.flags.c_contiguous and tiles.shape[1:] == (50, 50, 3)
        for row, col, tile in zip(rows, cols, tiles, strict=True):
            np.testing.assert_array_equal(tile, read_tile(reader, grid, int(row), int(col)))
            seen[row, col] = True
    np.testing.assert_array_equal(seen, tissue)


def test_rows_without_tissue_are_never_read() -> None:
    reader = CountingReader(synthetic_slide(rows=12, cols=16))
    grid = plan_grid(reader)
    tissue = np.zeros((grid.rows, grid.cols), dtype=bool)
    tissue[[3, 8]] = True
    list(tissue_batches(reader, grid, tissue, batch_size=16))
    assert reader.band_reads == [150, 400]


def test_the_reader_runs_at_most_depth_batches_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        for index in range(50):
            produced.append(index)
            yield np.array([index]), np.array([0]), np.zeros((1, 50, 50, 3), np.uint8)

    stream = prefetch(items(), depth=3)
    first = next(stream)
    assert int(first[0][0]) == 0
    time.sleep(0.3)  # plenty of time to run away, were the queue unbounded
    # One consumed, three queued, one made and waiting for room.
    assert len(produced) <= 5
    assert [int(rows[0]) for rows, _, _ in stream] == list(range(1, 50))
    assert not _wait_for_no_reader()


def test_a_consumer_that_stops_stops_the_reader_and_runs_its_cleanup() -> None:
    cleaned: list[str] = []

    def items() -> Iterator[int]:
        try:
            yield from range(10**6)
        finally:
            cleaned.append(threading.current_thread().name)

    stream = prefetch(items(), depth=2)  # type: ignore[arg-type]
    assert next(stream) == 0
    stream.close()  # what leaving the analysis's loop early does
    assert not _readers_alive()  # close() waited for the thread
    assert cleaned == [THREAD_NAME]


def test_a_reader_error_reaches_the_analysis_after_the_batches_before_it() -> None:
    image = synthetic_slide(rows=12, cols=16)
    reader = CountingReader(image, fail_at_y=300)
    scored: list[int] = []

    def predict(tiles: np.ndarray) -> np.ndarray:
        scored.append(len(tiles))
        return darkness_predict(tiles)

    with pytest.raises(InvalidInputError, match="could not be decoded"):
        analyze_slide(reader, predict, AnalysisOptions(batch_size=12))
    assert sum(scored) == 4 * 12  # grid rows 2..5 (one batch each) were read and scored
    assert max(reader.band_reads) == 300  # nothing read after the failure
    assert not _wait_for_no_reader()


def test_a_cancelled_analysis_stops_reading_and_leaves_no_thread() -> None:
    reader = CountingReader(synthetic_slide(rows=40, cols=16))

    class Cancelled(Exception):
        pass

    def progress(done: int, total: int) -> None:
        if done >= 12:
            raise Cancelled

    with pytest.raises(Cancelled):
        analyze_slide(reader, darkness_predict, AnalysisOptions(batch_size=12), progress=progress)
    assert not _readers_alive()
    # One batch scored, at most the queue's two and one more read ahead, of 36 tissue rows.
    assert len(reader.band_reads) <= 4


def test_a_failing_classifier_stops_the_reader() -> None:
    reader = CountingReader(synthetic_slide(rows=40, cols=16))

    def broken(tiles: np.ndarray) -> np.ndarray:
        raise RuntimeError("the model returned logits of shape (3,)")

    with pytest.raises(RuntimeError, match="logits"):
        analyze_slide(reader, broken, AnalysisOptions(batch_size=12))
    assert not _readers_alive()
    assert len(reader.band_reads) <= 4
