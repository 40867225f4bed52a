"""Score tiles while the slide is still decoding.

A PNG slide cannot be read by region: it is decoded whole, and the tissue
mask needs the whole thumbnail (Otsu's threshold is global), so inference
would wait for both. When the reader decodes in the background
(:meth:`BaseSlideReader.rows_ready` below the height), tiles whose rows are
already decoded are checked with a quick guess — the share of clearly
saturated pixels in a sparse sample — and the likely tissue is scored while
the rest decodes and the mask is computed on other threads.

The guess decides only *when* a tile is scored, never *whether*: once the
exact mask is known, tiles scored early that it leaves out are dropped, and
tissue tiles the guess missed are scored then. As a tile's probability does
not depend on the other tiles of its batch, the result is the same as
scoring after the mask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from bcd.slides._grid import TileGrid, band_tiles, read_band
from bcd.slides._tissue import MAX_THRESHOLD, saturation
from bcd.slides.readers import BaseSlideReader

logger = logging.getLogger(__name__)

# Every 5th pixel both ways: 100 samples per 50 px tile are plenty for a guess.
_SAMPLE_STEP = 5
_POLL_SECONDS = 0.002

#: ``score(tiles)``: uint8 ``(N, 50, 50, 3)`` → float32 ``(N,)`` IDC probabilities.
Score = Callable[[np.ndarray], np.ndarray]


def early_scoring_applies(
    reader: BaseSlideReader, grid: TileGrid, detect_tissue: bool, batch_size: int
) -> bool:
    """Whether tiles can be scored before the mask: a slide still decoding, plain grid.

    Only the simple, common case is handled: level 0 read without resampling
    and adjacent tiles whose size the sample step divides.
    """
    return (
        detect_tissue
        and grid.level == 0
        and grid.scale == 1.0
        and grid.stride == grid.tile_size
        and grid.tile_size % _SAMPLE_STEP == 0
        and batch_size > 0
        and reader.rows_ready() < reader.dimensions[1]
    )


def likely_tissue(
    band: np.ndarray, grid: TileGrid, row_count: int, threshold: float, minimum: float
) -> np.ndarray:
    """A guess of which tiles of a band are tissue, from a sparse pixel sample.

    Args:
        band: The band under ``row_count`` grid rows (:func:`read_band`), adjacent tiles.
        grid: The grid.
        row_count: Grid rows in the band.
        threshold: Saturation above which a pixel counts as tissue.
        minimum: Share of tissue pixels that makes a tile tissue.

    Returns:
        bool ``(row_count, cols)``.
    """
    per_tile = grid.tile_size // _SAMPLE_STEP
    offset = _SAMPLE_STEP // 2
    sample = band[offset::_SAMPLE_STEP, offset::_SAMPLE_STEP]
    sample = sample[: row_count * per_tile, : grid.cols * per_tile]
    saturated = saturation(sample) > threshold
    counts = saturated.reshape(row_count, per_tile, grid.cols, per_tile).sum(axis=(1, 3))
    return counts >= minimum * per_tile * per_tile


def score_early(
    reader: BaseSlideReader,
    grid: TileGrid,
    score: Score,
    batch_size: int,
    tissue_threshold: float | None,
    min_tissue_fraction: float,
    done: Callable[[], bool],
) -> tuple[np.ndarray, np.ndarray]:
    """Score the likely tissue tiles as their rows decode, until ``done()`` or the end.

    Args:
        reader: A reader decoding in the background (thread-safe).
        grid: The grid (:func:`early_scoring_applies` holds).
        score: Tile scorer.
        batch_size: Tiles per ``score`` call.
        tissue_threshold: The saturation threshold, if fixed; else the guess
            uses the upper bound of Otsu's (clipped) threshold.
        min_tissue_fraction: Share of a tile that must be tissue.
        done: Whether the exact mask is ready (scoring stops then).

    Returns:
        ``(probabilities, scored)``: float32 and bool ``(rows, cols)``;
        probabilities are NaN where not scored.
    """
    threshold = MAX_THRESHOLD if tissue_threshold is None else tissue_threshold
    minimum = max(min_tissue_fraction, 1e-9)
    probabilities = np.full((grid.rows, grid.cols), np.nan, dtype=np.float32)
    scored = np.zeros((grid.rows, grid.cols), dtype=bool)
    height = reader.dimensions[1]
    examined = 0  # grid rows already looked at
    queue: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    queued = 0
    while not done():
        ready = reader.rows_ready()
        complete = (
            grid.rows
            if ready >= height
            else min(grid.rows, max(0, (ready - grid.tile_size) // grid.stride + 1))
        )
        if complete > examined:
            band = read_band(reader, grid, examined, complete - examined)
            tiles = band_tiles(band, grid, complete - examined)
            rows, cols = np.nonzero(
                likely_tissue(band, grid, complete - examined, threshold, minimum)
            )
            queue.append((rows + examined, cols, tiles[rows, cols]))
            queued += len(rows)
            examined = complete
        if queued >= batch_size or (queued and examined == grid.rows):
            rows = np.concatenate([part[0] for part in queue])
            cols = np.concatenate([part[1] for part in queue])
            tiles = np.concatenate([part[2] for part in queue])
            take = min(batch_size, queued)
            probabilities[rows[:take], cols[:take]] = score(tiles[:take])
            scored[rows[:take], cols[:take]] = True
            queue = [(rows[take:], cols[take:], tiles[take:])] if queued > take else []
            queued -= take
        elif examined == grid.rows:
            break
        else:
            time.sleep(_POLL_SECONDS)
    logger.debug("scored %d tiles while the slide decoded", int(scored.sum()))
    return probabilities, scored
