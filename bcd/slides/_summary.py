"""The JSON report of a slide analysis: tissue, IDC fraction, regions, top tiles, truth."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np

from bcd.errors import InvalidInputError
from bcd.slides._analysis import SlideAnalysis
from bcd.slides._grid import TILE_SIZE
from bcd.slides._metrics import binary_metrics
from bcd.slides._regions import largest_region, top_tiles

REPORT_FORMAT_VERSION = 1


def build_report(
    analysis: SlideAnalysis,
    truth: np.ndarray | None = None,
    truth_cell: int = TILE_SIZE,
    source: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Summarise an analysis as a JSON-ready report.

    Args:
        analysis: The result of :func:`bcd.slides.analyze_slide`.
        truth: Optional ground truth, int ``(truth_rows, truth_cols)`` with 1 =
            IDC, 0 = no IDC, -1 = not annotated, on a grid of ``truth_cell``
            level-0 pixels starting at the slide's top-left corner.
        truth_cell: Edge of a ground-truth cell in level-0 pixels.
        source: Facts about the file (``filename``, ``size_bytes``, ``sha256`` …).
        model: Facts about the classifier (``endpoint``, ``model``, ``variant`` …).

    Returns:
        The report (see docs/slides.md for its fields).

    Raises:
        InvalidInputError: If ``truth`` is not a 2-D array of -1/0/1.
    """
    grid = analysis.grid
    probabilities = analysis.probabilities
    threshold = analysis.threshold
    scored = analysis.tissue
    positive = scored & (np.nan_to_num(probabilities, nan=0.0) >= threshold)
    tissue_tiles = int(scored.sum())
    positive_tiles = int(positive.sum())
    cell_mm2 = grid.cell_area_mm2()
    total_seconds = analysis.seconds["total"]
    report: dict[str, Any] = {
        "format_version": REPORT_FORMAT_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": dict(source or {}),
        "model": dict(model or {}),
        "slide": dict(analysis.slide),
        "analysis": {
            "level": grid.level,
            "resampling": grid.scale,
            "model_mpp": round(grid.model_mpp, 4),
            "tile_size": grid.tile_size,
            "stride": grid.stride,
            "rows": grid.rows,
            "cols": grid.cols,
            "tile_footprint": grid.footprint,
            "threshold": threshold,
            "detect_tissue": analysis.options.detect_tissue,
            "tissue_threshold": round(analysis.tissue_threshold, 2),
            "min_tissue_fraction": analysis.options.min_tissue_fraction,
            "context_radius": analysis.context.radius if analysis.context else 0,
        },
        "tiles": {
            "grid": grid.tile_count,
            "tissue": tissue_tiles,
            "idc_positive": positive_tiles,
        },
        "tissue_area_mm2": round(tissue_tiles * cell_mm2, 4),
        "idc_area_mm2": round(positive_tiles * cell_mm2, 4),
        "idc_positive_fraction": round(positive_tiles / tissue_tiles, 4) if tissue_tiles else 0.0,
        "mean_probability": (round(float(np.nanmean(probabilities)), 4) if tissue_tiles else None),
        "largest_region": _region_summary(analysis, positive),
        # Ranked by each tile's own score: with slide context, a tile of fat
        # inside a tumour scores high on the map but shows nothing to look at.
        "top_tiles": [
            _tile_summary(analysis, rank, row, col, own)
            for rank, (row, col, own) in enumerate(
                top_tiles(_own_probabilities(analysis), analysis.options.top_k), start=1
            )
        ],
        "timings": {
            "seconds": round(total_seconds, 3),
            "tissue_mask_seconds": round(analysis.seconds["mask"], 3),
            "tiles_per_second": round(tissue_tiles / total_seconds, 1) if total_seconds else None,
        },
        "notes": list(analysis.notes),
        "ground_truth": None,
    }
    if truth is not None:
        report["ground_truth"] = truth_metrics(analysis, truth, truth_cell)
    return report


def _region_summary(analysis: SlideAnalysis, positive: np.ndarray) -> dict[str, Any] | None:
    region = largest_region(positive)
    if region is None:
        return None
    grid = analysis.grid
    rows, cols = np.nonzero(region)
    x0, y0 = grid.tile_origin(int(rows.min()), int(cols.min()))
    x1, y1 = grid.tile_origin(int(rows.max()), int(cols.max()))
    values = analysis.probabilities[region]
    return {
        "tiles": int(region.sum()),
        "area_mm2": round(int(region.sum()) * grid.cell_area_mm2(), 4),
        "bbox": {
            "x": x0,
            "y": y0,
            "width": x1 - x0 + grid.footprint,
            "height": y1 - y0 + grid.footprint,
        },
        "centroid": {
            "x": round(
                float(cols.mean() * grid.stride + grid.tile_size / 2) * grid.level0_per_model
            ),
            "y": round(
                float(rows.mean() * grid.stride + grid.tile_size / 2) * grid.level0_per_model
            ),
        },
        "mean_probability": round(float(values.mean()), 4),
        "max_probability": round(float(values.max()), 4),
    }


def _own_probabilities(analysis: SlideAnalysis) -> np.ndarray:
    """Each tile's own IDC probability (before any slide context)."""
    if analysis.tile_probabilities is not None:
        return analysis.tile_probabilities
    return analysis.probabilities


def _tile_summary(
    analysis: SlideAnalysis, rank: int, row: int, col: int, own: float
) -> dict[str, Any]:
    x, y = analysis.grid.tile_origin(row, col)
    size = analysis.grid.footprint
    return {
        "rank": rank,
        "row": row,
        "col": col,
        "x": x,
        "y": y,
        "width": size,
        "height": size,
        # The map's value (with slide context when applied), and the tile's own.
        "probability": round(float(analysis.probabilities[row, col]), 4),
        "tile_probability": round(own, 4),
    }


def truth_for_grid(analysis: SlideAnalysis, truth: np.ndarray, truth_cell: int) -> np.ndarray:
    """Ground truth sampled at every tile's centre.

    Args:
        analysis: The analysis whose grid to follow.
        truth: int ``(truth_rows, truth_cols)``, -1/0/1.
        truth_cell: Edge of a truth cell in level-0 pixels.

    Returns:
        int8 ``(rows, cols)``: the truth cell under each tile's centre, -1 outside.

    Raises:
        InvalidInputError: If ``truth`` is not 2-D or has values other than -1/0/1.
    """
    truth = np.asarray(truth)
    if truth.ndim != 2 or truth.size == 0:
        raise InvalidInputError(
            f"ground truth must be a 2-D tile map, got shape {tuple(truth.shape)}"
        )
    if not np.isin(truth, (-1, 0, 1)).all():
        raise InvalidInputError("ground truth may only hold -1 (unknown), 0 (no IDC) and 1 (IDC)")
    if truth_cell <= 0:
        raise InvalidInputError(f"truth cell size {truth_cell} must be positive")
    grid = analysis.grid
    half = grid.tile_size / 2
    centres_y = (np.arange(grid.rows) * grid.stride + half) * grid.level0_per_model
    centres_x = (np.arange(grid.cols) * grid.stride + half) * grid.level0_per_model
    truth_rows = np.floor(centres_y / truth_cell).astype(int)
    truth_cols = np.floor(centres_x / truth_cell).astype(int)
    inside_rows = truth_rows < truth.shape[0]
    inside_cols = truth_cols < truth.shape[1]
    sampled = np.full((grid.rows, grid.cols), -1, dtype=np.int8)
    rows_idx = np.flatnonzero(inside_rows)
    cols_idx = np.flatnonzero(inside_cols)
    sampled[np.ix_(rows_idx, cols_idx)] = truth[np.ix_(truth_rows[rows_idx], truth_cols[cols_idx])]
    return sampled


def truth_metrics(analysis: SlideAnalysis, truth: np.ndarray, truth_cell: int) -> dict[str, Any]:
    """Per-slide metrics of the probability map against a ground-truth tile map.

    Every annotated tile counts; a tile the tissue mask skipped scores 0 (the
    pipeline would not flag it), and ``coverage`` says how many annotated
    tiles were scored.

    Returns:
        :func:`bcd.slides._metrics.binary_metrics` plus ``coverage`` and
        ``annotated_tiles`` / ``skipped_annotated_tiles`` / ``skipped_idc_tiles``.
    """
    sampled = truth_for_grid(analysis, truth, truth_cell)
    annotated = sampled >= 0
    labels = sampled[annotated]
    scores = np.nan_to_num(analysis.probabilities, nan=0.0)[annotated]
    skipped = annotated & ~analysis.tissue
    metrics = binary_metrics(labels, scores, analysis.threshold)
    metrics = {
        key: (round(value, 4) if isinstance(value, float) and math.isfinite(value) else value)
        for key, value in metrics.items()
    }
    annotated_count = int(annotated.sum())
    metrics.update(
        {
            "annotated_tiles": annotated_count,
            "skipped_annotated_tiles": int(skipped.sum()),
            "skipped_idc_tiles": int((skipped & (sampled == 1)).sum()),
            "coverage": round(1 - int(skipped.sum()) / annotated_count, 4)
            if annotated_count
            else 0.0,
        }
    )
    return metrics
