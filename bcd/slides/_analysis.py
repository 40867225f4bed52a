"""Whole-slide analysis: tile the tissue, score every tile, summarise.

Memory stays bounded whatever the slide size: tiles are read band by band
(a few grid rows at a time), batched, scored and dropped; only the
probability map (one float per tile) and a thumbnail are kept. Reading and
cutting the tiles runs on a producer thread behind a bounded queue, a couple
of batches ahead of inference (:mod:`bcd.slides._tile_pipeline`), so the two
overlap. While a
slide still decodes in the background (a PNG), the likely tissue of its
decoded top is scored as the mask is being computed (:mod:`bcd.slides._early`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from bcd.errors import InvalidInputError
from bcd.neighbourhood import SlideContext, context_map
from bcd.slides._early import early_scoring_applies, score_early
from bcd.slides._grid import (
    MODEL_MPP,
    TILE_SIZE,
    TileGrid,
    check_tile_limit,
    plan_grid,
)
from bcd.slides._tile_pipeline import prefetch, tissue_batches
from bcd.slides._tissue import saturation, tissue_threshold
from bcd.slides.readers import BaseSlideReader

#: Tile decision threshold when neither the options nor the model give one.
DEFAULT_THRESHOLD = 0.5
#: The smallest stride: each halving of the stride quadruples the tiles to score.
MIN_STRIDE = 8
#: Grid cells one analysis may have (``BCD_MAX_SLIDE_TILES`` on a server).
MAX_TILES = 250_000

logger = logging.getLogger(__name__)

#: ``predict(tiles)``: uint8 ``(N, 50, 50, 3)`` RGB → ``(N, 2)`` class probabilities
#: (or ``(N,)`` IDC probabilities).
Predict = Callable[[np.ndarray], np.ndarray]
#: ``progress(done_tiles, total_tiles)``; raising from it cancels the analysis.
Progress = Callable[[int, int], None]

_MASK_PIXELS_PER_TILE = 4
_MAX_MASK_SIZE = 8192
_MIN_THUMBNAIL = 1024
_THUMBNAIL_PIXELS_PER_TILE = 16


@dataclass(frozen=True)
class AnalysisOptions:
    """How to analyse a slide.

    Attributes:
        stride: Step between tiles in model pixels (50 = adjacent tiles;
            at least :data:`MIN_STRIDE`).
        mpp: Microns per pixel to use instead of the file's (``None`` = the file's).
        model_mpp: Resolution of the model's training patches (4 µm/px for the
            IDC dataset; a model's ``model.json`` may say otherwise).
        threshold: IDC probability at which a tile counts as positive;
            ``None`` = the model's calibrated ``decision_threshold``
            (``model.json``), 0.5 when the classifier does not say.
        detect_tissue: Skip background tiles (``False`` scores every tile).
        min_tissue_fraction: Share of a tile that must be tissue to score it.
        tissue_threshold: Saturation threshold (0-255); ``None`` = Otsu per slide.
        batch_size: Tiles per ``predict`` call.
        top_k: How many of the most suspicious tiles to report.
        thumbnail_size: Longest side of the thumbnail kept for the heatmap (at
            most; small slides get 16 pixels per tile, and no less than 1024).
        context: Combine each tile's score with its neighbours' when the model
            has a fitted slide context (``slide_context`` in ``model.json``,
            see :mod:`bcd.neighbourhood`); ``False`` scores every tile alone.
            The context is fitted for adjacent tiles, so it applies at the
            default stride only.
        max_tiles: Refuse a slide whose tile grid has more cells than this
            (:data:`MAX_TILES` by default).
    """

    stride: int = TILE_SIZE
    mpp: float | None = None
    model_mpp: float = MODEL_MPP
    threshold: float | None = None
    detect_tissue: bool = True
    min_tissue_fraction: float = 0.1
    tissue_threshold: float | None = None
    batch_size: int = 256
    top_k: int = 12
    thumbnail_size: int = 2048
    context: bool = True
    max_tiles: int = MAX_TILES

    def validate(self) -> AnalysisOptions:
        """Check ranges.

        Returns:
            The options, unchanged.

        Raises:
            InvalidInputError: For any value out of range.
        """
        checks = [
            (
                MIN_STRIDE <= self.stride <= 10 * TILE_SIZE,
                f"stride {self.stride} must be between {MIN_STRIDE} and {10 * TILE_SIZE} "
                f"model pixels ({TILE_SIZE} = adjacent tiles; a smaller stride multiplies "
                "the tiles to score)",
            ),
            (self.max_tiles >= 1, f"max_tiles {self.max_tiles} must be at least 1"),
            (
                self.mpp is None or 0 < self.mpp < 100,
                f"mpp {self.mpp} is not a plausible resolution (0 < mpp < 100 µm/px)",
            ),
            (
                self.threshold is None or 0.0 <= self.threshold <= 1.0,
                f"threshold {self.threshold} must be in [0, 1]",
            ),
            (
                0.0 <= self.min_tissue_fraction <= 1.0,
                f"min_tissue_fraction {self.min_tissue_fraction} must be in [0, 1]",
            ),
            (0 < self.model_mpp < 100, f"model_mpp {self.model_mpp} must be in (0, 100) µm/px"),
            (1 <= self.batch_size <= 8192, f"batch_size {self.batch_size} must be 1..8192"),
            (0 <= self.top_k <= 1000, f"top_k {self.top_k} must be 0..1000"),
            (
                64 <= self.thumbnail_size <= 8192,
                f"thumbnail_size {self.thumbnail_size} must be 64..8192",
            ),
            (
                self.tissue_threshold is None or 0 <= self.tissue_threshold <= 255,
                f"tissue_threshold {self.tissue_threshold} must be in [0, 255]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise InvalidInputError(message)
        return self

    @property
    def context_applies(self) -> bool:
        """Whether a model's slide context is used: asked for, and tiles adjacent."""
        return self.context and self.stride == TILE_SIZE

    def with_threshold(self, model_threshold: float | None) -> AnalysisOptions:
        """These options with ``threshold`` settled: the one given, else the model's.

        Args:
            model_threshold: The classifier's ``decision_threshold``, if known.

        Returns:
            Options whose ``threshold`` is a number.
        """
        if self.threshold is not None:
            return self
        chosen = DEFAULT_THRESHOLD if model_threshold is None else float(model_threshold)
        return replace(self, threshold=chosen)


@dataclass
class SlideAnalysis:
    """The result of :func:`analyze_slide`.

    Attributes:
        grid: The tile grid (level, stride, rows, cols).
        probabilities: float32 ``(rows, cols)`` IDC probability, NaN where not scored.
        tissue: bool ``(rows, cols)``, the tiles that were scored.
        thumbnail: uint8 ``(h, w, 3)`` picture of the whole slide.
        thumbnail_downsample: Level-0 pixels per thumbnail pixel.
        tissue_threshold: Saturation threshold used.
        seconds: Wall time of each stage: ``mask`` (until the tissue mask was
            known; tiles may have been scored meanwhile), ``tiles`` (the rest)
            and ``total``.
        slide: Facts about the slide (size, levels, mpp and where it came from).
        options: The options used.
        notes: What was assumed or adjusted, for the report.
        context: The slide context ``probabilities`` were combined with, or
            ``None`` when every tile was scored alone.
        tile_probabilities: Each tile's own IDC probability, before the
            context combined it with its neighbours' (``None`` without context:
            ``probabilities`` are the tiles' own).
    """

    grid: TileGrid
    probabilities: np.ndarray
    tissue: np.ndarray
    thumbnail: np.ndarray
    thumbnail_downsample: float
    tissue_threshold: float
    seconds: dict[str, float]
    slide: dict[str, Any]
    options: AnalysisOptions
    notes: list[str] = field(default_factory=list)
    context: SlideContext | None = None
    tile_probabilities: np.ndarray | None = None

    @property
    def threshold(self) -> float:
        """The IDC probability at which a tile counted as positive."""
        chosen = self.options.threshold
        return DEFAULT_THRESHOLD if chosen is None else chosen

    @property
    def scored_tiles(self) -> int:
        """Number of tiles that went through the model."""
        return int(self.tissue.sum())


def analyze_slide(
    reader: BaseSlideReader,
    predict: Predict,
    options: AnalysisOptions | None = None,
    progress: Progress | None = None,
    context: SlideContext | None = None,
) -> SlideAnalysis:
    """Score every tissue tile of a slide with ``predict``.

    Args:
        reader: The open slide.
        predict: Tile classifier (see :data:`Predict`): the serving runtime's,
            or any numpy function in tests.
        options: Tiling and tissue options (defaults if ``None``).
        progress: Called after every batch with ``(done, total)`` tissue tiles;
            an exception raised in it stops the analysis and propagates.
        context: The model's slide context: when given (and ``options.context``
            is on), the map holds each tile's score combined with its
            neighbours' (:func:`bcd.neighbourhood.context_map`).

    Returns:
        The probability map and everything needed to summarise and render it.

    Raises:
        InvalidInputError: For bad options, an unreadable slide region, or a
            ``predict`` that returns the wrong shape.
        PayloadTooLargeError: The tile grid has more than ``options.max_tiles`` cells.
    """
    options = (options or AnalysisOptions()).validate().with_threshold(None)
    started = time.perf_counter()
    grid = plan_grid(reader, stride=options.stride, mpp=options.mpp, target_mpp=options.model_mpp)
    check_tile_limit(grid, options.max_tiles)

    def score(tiles: np.ndarray) -> np.ndarray:
        return _idc_probabilities(predict(tiles), len(tiles))

    if early_scoring_applies(reader, grid, options.detect_tissue, options.batch_size):
        # The mask waits for the whole slide; meanwhile the decoded top is scored.
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slide-mask")
        try:
            masking = pool.submit(_tissue_map, reader, grid, options)
            probabilities, scored = score_early(
                reader,
                grid,
                score,
                options.batch_size,
                options.tissue_threshold,
                options.min_tissue_fraction,
                masking.done,
            )
            thumbnail, thumbnail_downsample, threshold, tissue = masking.result()
        finally:
            pool.shutdown(wait=False)  # after a failure, the mask is not waited for
        probabilities[scored & ~tissue] = np.nan  # the guess was wrong: not tissue
    else:
        thumbnail, thumbnail_downsample, threshold, tissue = _tissue_map(reader, grid, options)
        probabilities = np.full((grid.rows, grid.cols), np.nan, dtype=np.float32)
        scored = np.zeros_like(tissue)
    mask_seconds = time.perf_counter() - started
    remaining = tissue & ~scored
    total = int(tissue.sum())
    logger.info(
        "slide grid %dx%d, %d tissue tiles, level %d", grid.rows, grid.cols, total, grid.level
    )
    done = total - int(remaining.sum())
    if progress is not None:
        progress(done, total)
    for rows, cols, tiles in prefetch(tissue_batches(reader, grid, remaining, options.batch_size)):
        probabilities[rows, cols] = score(tiles)
        done += len(tiles)
        if progress is not None:
            progress(done, total)
    notes = list(grid.notes)
    applied = own = None
    if context is not None and options.context:
        if options.context_applies:
            own = probabilities
            probabilities = context_map(own, context)
            applied = context
        else:
            notes.append(
                f"the model's slide context is fitted for adjacent tiles (stride {TILE_SIZE}); "
                f"at stride {options.stride} every tile was scored alone"
            )
    seconds = {
        "mask": mask_seconds,
        "tiles": time.perf_counter() - started - mask_seconds,
        "total": time.perf_counter() - started,
    }
    width, height = reader.dimensions
    slide = {
        "format": reader.format,
        "width": width,
        "height": height,
        "levels": reader.level_count,
        "mpp": grid.slide_mpp,
        "mpp_source": "user" if options.mpp else ("file" if reader.mpp else "assumed"),
    }
    return SlideAnalysis(
        grid=grid,
        probabilities=probabilities,
        tissue=tissue,
        thumbnail=thumbnail,
        thumbnail_downsample=thumbnail_downsample,
        tissue_threshold=float(threshold),
        seconds=seconds,
        slide=slide,
        options=options,
        notes=notes,
        context=applied,
        tile_probabilities=own,
    )


def _tissue_map(
    reader: BaseSlideReader, grid: TileGrid, options: AnalysisOptions
) -> tuple[np.ndarray, float, float, np.ndarray]:
    """Thumbnail, its downsample, the saturation threshold and the tiles to score."""
    # A few pixels per tile are plenty for the heatmap; small slides get small thumbnails.
    thumbnail_size = min(
        options.thumbnail_size,
        max(_MIN_THUMBNAIL, _THUMBNAIL_PIXELS_PER_TILE * max(grid.rows, grid.cols)),
    )
    thumbnail, thumbnail_downsample = reader.thumbnail(thumbnail_size)
    thumbnail_saturation = saturation(thumbnail)
    threshold = (
        options.tissue_threshold
        if options.tissue_threshold is not None
        else tissue_threshold(thumbnail, saturation_map=thumbnail_saturation)
    )
    if options.detect_tissue:
        fractions = tile_tissue_fractions(
            reader, grid, threshold, thumbnail_saturation, thumbnail_downsample
        )
        tissue = fractions >= max(options.min_tissue_fraction, 1e-9)
    else:
        tissue = np.ones((grid.rows, grid.cols), dtype=bool)
    return thumbnail, thumbnail_downsample, float(threshold), tissue


def tile_tissue_fractions(
    reader: BaseSlideReader,
    grid: TileGrid,
    threshold: float,
    thumbnail_saturation: np.ndarray,
    thumbnail_downsample: float,
) -> np.ndarray:
    """Share of tissue pixels under every tile, from a low-resolution mask.

    The mask comes from the thumbnail when a tile spans a few of its pixels,
    otherwise from a finer overview (bounded in size).

    Args:
        reader: The open slide.
        grid: The tile grid.
        threshold: Saturation threshold of tissue.
        thumbnail_saturation: Saturation of the slide thumbnail.
        thumbnail_downsample: Level-0 pixels per thumbnail pixel.

    Returns:
        float32 ``(rows, cols)`` in [0, 1].
    """
    footprint = grid.tile_size * grid.level0_per_model
    values, downsample = thumbnail_saturation, thumbnail_downsample
    if footprint / downsample < _MASK_PIXELS_PER_TILE:
        wanted = max(reader.dimensions) * _MASK_PIXELS_PER_TILE / footprint
        if wanted > max(values.shape):
            overview, downsample = reader.thumbnail(int(min(wanted, _MAX_MASK_SIZE)))
            values = saturation(overview)
    mask = values > threshold
    step = grid.stride * grid.level0_per_model / downsample
    size = footprint / downsample
    starts_y = np.arange(grid.rows) * step
    starts_x = np.arange(grid.cols) * step
    y0 = np.clip(np.floor(starts_y).astype(int), 0, mask.shape[0])
    y1 = np.clip(np.maximum(np.ceil(starts_y + size).astype(int), y0 + 1), 0, mask.shape[0])
    x0 = np.clip(np.floor(starts_x).astype(int), 0, mask.shape[1])
    x1 = np.clip(np.maximum(np.ceil(starts_x + size).astype(int), x0 + 1), 0, mask.shape[1])
    integral, column_of = _summed_area(mask, np.concatenate([x0, x1]))
    left, right = column_of[: len(x0)], column_of[len(x0) :]
    counts = integral[y1][:, right] - integral[y0][:, right] - integral[y1][:, left]
    counts += integral[y0][:, left]
    # Area of the full tile, so a tile hanging over the slide edge counts the outside as glass.
    area = np.outer(
        np.maximum(np.ceil(starts_y + size) - np.floor(starts_y), 1),
        np.maximum(np.ceil(starts_x + size) - np.floor(starts_x), 1),
    )
    return (counts / area).astype(np.float32)


def _summed_area(mask: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A summed-area table of ``mask``, kept only at the x positions in ``columns``.

    Returns:
        ``(table, index)``: int64 ``(h + 1, k)`` where ``table[y, index[i]]`` is the
        count of True pixels above row ``y`` and left of column ``columns[i]``.
    """
    wanted, index = np.unique(columns, return_inverse=True)
    # Running sums along rows (contiguous, fast), sampled at the wanted columns only;
    # the running sum down the columns then runs on that narrow table.
    along_rows = np.zeros((mask.shape[0], mask.shape[1] + 1), dtype=np.int32)
    np.cumsum(mask, axis=1, dtype=np.int32, out=along_rows[:, 1:])
    table = np.zeros((mask.shape[0] + 1, len(wanted)), dtype=np.int64)
    np.cumsum(along_rows[:, wanted], axis=0, dtype=np.int64, out=table[1:])
    return table, index.ravel()


def _idc_probabilities(output: Any, expected: int) -> np.ndarray:
    """Column 1 of an ``(N, 2)`` output, or an ``(N,)`` output as is."""
    scores = np.asarray(output, dtype=np.float32)
    if scores.ndim == 2 and scores.shape == (expected, 2):
        scores = scores[:, 1]
    if scores.shape != (expected,):
        raise InvalidInputError(
            f"the classifier returned shape {tuple(scores.shape)} for {expected} tiles; "
            f"expected ({expected}, 2) class probabilities"
        )
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or scores.max() > 1:
        raise InvalidInputError(
            "the classifier returned values outside [0, 1]; it must return probabilities "
            "(apply softmax to logits)"
        )
    return scores
