"""Scoring tiles while the slide decodes gives the same analysis as scoring after the mask.

``RevealingReader`` is an in-memory slide that "decodes" a few rows each time
it is asked how far it got, and whose thumbnail waits for the whole slide, as
the PNG reader's does; the analysis of it must equal the analysis of the same
picture read at once, whatever the early guess of tissue says.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from bcd.slides import (
    AnalysisOptions,
    ArraySlideReader,
    SlideAnalysis,
    TileGrid,
    _early,
    analyze_slide,
    open_slide,
    plan_grid,
)
from bcd.slides._early import early_scoring_applies
from tests.slides.conftest import darkness_predict, synthetic_slide


class RevealingReader(ArraySlideReader):
    """An in-memory slide whose rows become ready ``step`` at a time, per ``rows_ready`` call."""

    def __init__(self, image: np.ndarray, step: int = 37) -> None:
        super().__init__(image, mpp=4.0)
        self._step = step
        self._ready = 0
        self._lock = threading.Lock()
        self._all_ready = threading.Event()

    def rows_ready(self) -> int:
        with self._lock:
            self._ready = min(self.dimensions[1], self._ready + self._step)
            if self._ready == self.dimensions[1]:
                self._all_ready.set()
            return self._ready

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        assert y + height <= self._ready, "read rows that were not decoded yet"
        return super()._read(level, x, y, width, height)

    def thumbnail(self, max_size: int) -> tuple[np.ndarray, float]:
        assert self._all_ready.wait(timeout=10)
        return super().thumbnail(max_size)


def _image() -> np.ndarray:
    image = synthetic_slide(14, 17, seed=8)
    image[:, 410:440] = 250  # a glass strip: tiles half on tissue
    return image


def _assert_same(early: SlideAnalysis, reference: SlideAnalysis) -> None:
    np.testing.assert_array_equal(early.tissue, reference.tissue)
    np.testing.assert_array_equal(early.thumbnail, reference.thumbnail)
    np.testing.assert_array_equal(early.probabilities, reference.probabilities)
    assert early.tissue_threshold == reference.tissue_threshold


def test_early_scoring_gives_the_same_analysis() -> None:
    image = _image()
    reader = RevealingReader(image)
    before_mask: list[int] = []

    def predict(tiles: np.ndarray) -> np.ndarray:
        if not reader._all_ready.is_set():
            before_mask.append(len(tiles))
        return darkness_predict(tiles)

    options = AnalysisOptions(batch_size=16)
    early = analyze_slide(reader, predict, options)
    reference = analyze_slide(ArraySlideReader(image, mpp=4.0), darkness_predict, options)
    assert before_mask and sum(before_mask) >= 16  # tiles really were scored early
    _assert_same(early, reference)


@pytest.mark.parametrize("guess", ["everything", "nothing", "checkerboard"])
def test_a_wrong_guess_costs_time_never_results(
    monkeypatch: pytest.MonkeyPatch, guess: str
) -> None:
    def wrong(band: np.ndarray, grid: TileGrid, row_count: int, *args: object) -> np.ndarray:
        shape = (row_count, grid.cols)
        if guess == "everything":
            return np.ones(shape, dtype=bool)
        if guess == "nothing":
            return np.zeros(shape, dtype=bool)
        return (np.indices(shape).sum(axis=0) % 2).astype(bool)

    monkeypatch.setattr(_early, "likely_tissue", wrong)
    image = _image()
    options = AnalysisOptions(batch_size=10)
    early = analyze_slide(RevealingReader(image, step=60), darkness_predict, options)
    reference = analyze_slide(ArraySlideReader(image, mpp=4.0), darkness_predict, options)
    _assert_same(early, reference)
    assert np.isnan(early.probabilities[~early.tissue]).all()  # glass scored early is dropped


def test_the_guess_finds_the_tissue_of_a_band() -> None:
    image = _image()
    reader = ArraySlideReader(image, mpp=4.0)
    grid = plan_grid(reader)
    band = image[: 3 * 50]
    guess = _early.likely_tissue(band, grid, 3, threshold=50.0, minimum=0.1)
    assert guess.shape == (3, grid.cols)
    assert not guess[0].any() and not guess[1].any()  # glass border rows
    assert guess[2, 2:-2].any() and not guess[2, :2].any()


def test_progress_counts_early_tiles_and_ends_complete() -> None:
    updates: list[tuple[int, int]] = []
    analyze_slide(
        RevealingReader(_image()),
        darkness_predict,
        AnalysisOptions(batch_size=7),
        progress=lambda done, total: updates.append((done, total)),
    )
    total = updates[-1][1]
    assert updates[-1] == (total, total) and total > 0
    assert [done for done, _ in updates] == sorted(done for done, _ in updates)
    assert all(count == total for _, count in updates)


def test_a_failing_classifier_stops_the_early_phase() -> None:
    class Broken(Exception):
        pass

    def broken(tiles: np.ndarray) -> np.ndarray:
        raise Broken

    reader = RevealingReader(_image())
    with pytest.raises(Broken):
        analyze_slide(reader, broken, AnalysisOptions(batch_size=8))
    assert not reader._all_ready.is_set()  # it stopped at the first batch, mask unfinished
    reader._all_ready.set()  # lets the abandoned mask thread finish


@pytest.mark.parametrize(
    ("options", "ready", "applies"),
    [
        (AnalysisOptions(), False, True),
        (AnalysisOptions(), True, False),  # decoded already: nothing to overlap
        (AnalysisOptions(stride=25), False, False),
        (AnalysisOptions(detect_tissue=False), False, False),
        (AnalysisOptions(mpp=2.0), False, False),  # resampled tiles
    ],
    ids=["decoding", "decoded", "overlapping-tiles", "all-tiles", "resampled"],
)
def test_early_scoring_applies_only_to_the_plain_case(
    options: AnalysisOptions, ready: bool, applies: bool
) -> None:
    image = _image()
    reader = ArraySlideReader(image, mpp=4.0) if ready else RevealingReader(image)
    grid = plan_grid(reader, stride=options.stride, mpp=options.mpp)
    result = early_scoring_applies(reader, grid, options.detect_tissue, options.batch_size)
    assert result is applies


def test_a_png_slide_gives_the_same_analysis_as_its_pixels(tmp_path: Path) -> None:
    from PIL import Image

    image = _image()
    path = tmp_path / "slide.png"
    Image.fromarray(image).save(path, dpi=(6350, 6350))
    options = AnalysisOptions(batch_size=12)
    with open_slide(path) as reader:
        analysis = analyze_slide(reader, darkness_predict, options)
    reference = analyze_slide(ArraySlideReader(image, mpp=4.0), darkness_predict, options)
    _assert_same(analysis, reference)
