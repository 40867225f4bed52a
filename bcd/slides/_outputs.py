"""Write an analysis to a folder: images, maps, JSON and the one-page report.

Every file is written beside its final name and renamed into place, so a
crash never leaves a half-written output that looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image

from bcd.slides._analysis import SlideAnalysis
from bcd.slides._grid import read_tile
from bcd.slides._page import PAGE_DPI, render_page
from bcd.slides._png import encode_png
from bcd.slides._regions import regions_geojson
from bcd.slides._render import comparison_image, heatmap_image, overlay_rgba
from bcd.slides._summary import truth_for_grid
from bcd.slides.readers import BaseSlideReader

#: The files :func:`write_outputs` produces (``comparison.png`` and
#: ``truth.npy`` only with ground truth, ``tile_probabilities.npy`` only when
#: the slide context changed the map).
OUTPUT_FILES = (
    "report.json",
    "report.pdf",
    "report.png",
    "heatmap.png",
    "overlay.png",
    "thumbnail.jpg",
    "probabilities.npy",
    "comparison.png",
    "truth.npy",
    "tile_probabilities.npy",
    "regions.geojson",
    "tiles.csv",
)


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file through ``write(handle)`` into a temporary sibling, then rename it.

    Args:
        path: Final location.
        write: Writes the whole content to the binary handle it receives.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


_FORMATS = {
    ".pdf": ("PDF", {}),
    ".jpg": ("JPEG", {"quality": 90}),
}


def _save_image(path: Path, image: Image.Image, **options: Any) -> None:
    if path.suffix == ".png":
        data = encode_png(image, dpi=options.get("dpi"))
        atomic_write(path, lambda handle: handle.write(data))
        return
    fmt, defaults = _FORMATS[path.suffix]
    atomic_write(path, lambda handle: image.save(handle, format=fmt, **{**defaults, **options}))


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _write_exports(
    analysis: SlideAnalysis, sampled_truth: np.ndarray | None, keep: Callable[[str], Path]
) -> None:
    """``regions.geojson`` (QuPath annotations) and ``tiles.csv`` (one row per scored tile)."""
    grid = analysis.grid
    collection = regions_geojson(
        analysis.probabilities,
        analysis.threshold,
        grid.stride * grid.level0_per_model,
        (analysis.slide["width"], analysis.slide["height"]),
        grid.slide_mpp,
    )
    geojson = json.dumps(collection, ensure_ascii=False).encode()
    atomic_write(keep("regions.geojson"), lambda handle: handle.write(geojson))
    table = tiles_csv(analysis, sampled_truth).encode()
    atomic_write(keep("tiles.csv"), lambda handle: handle.write(table))


#: Columns of ``tiles.csv``.
CSV_COLUMNS = (
    "row", "col", "x", "y", "width", "height",
    "probability", "tile_probability", "idc", "truth",
)  # fmt: skip


def tiles_csv(analysis: SlideAnalysis, sampled_truth: np.ndarray | None = None) -> str:
    """Every scored tile as a CSV row: grid place, level-0 box, scores, decision, truth.

    Args:
        analysis: The analysis.
        sampled_truth: Truth on the grid (:func:`bcd.slides.truth_for_grid`), if any.

    Returns:
        The CSV text (header :data:`CSV_COLUMNS`); ``probability`` is the map's
        value (with slide context when applied), ``tile_probability`` the tile
        alone, ``idc`` 1/0 at the threshold, ``truth`` 1/0 or empty when unknown.
    """
    import csv
    import io

    grid = analysis.grid
    own = analysis.tile_probabilities
    own = analysis.probabilities if own is None else own
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    rows, cols = np.nonzero(~np.isnan(analysis.probabilities))
    for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
        x, y = grid.tile_origin(row, col)
        value = float(analysis.probabilities[row, col])
        truth = "" if sampled_truth is None else int(sampled_truth[row, col])
        writer.writerow(
            (
                row, col, x, y, grid.footprint, grid.footprint,
                f"{value:.4f}", f"{float(own[row, col]):.4f}",
                int(value >= analysis.threshold), "" if truth == -1 else truth,
            )
        )  # fmt: skip
    return buffer.getvalue()


def write_outputs(
    analysis: SlideAnalysis,
    report: dict[str, Any],
    out_dir: str | Path,
    reader: BaseSlideReader,
    truth: np.ndarray | None = None,
    truth_cell: int = 50,
    explanations: list[Image.Image] | None = None,
) -> dict[str, Path]:
    """Write every output of an analysis into ``out_dir``.

    Args:
        analysis: The analysis.
        report: Its report (:func:`bcd.slides.build_report`).
        out_dir: Folder to write into (created if missing).
        reader: The open slide, to crop the top tiles for the report page.
        truth: The ground truth given to :func:`build_report`, if any.
        truth_cell: Its cell size in level-0 pixels.
        explanations: The top tiles' Grad-CAM pictures for the report page, if any.

    Returns:
        Output name → path, for the files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    def keep(name: str) -> Path:
        written[name] = out / name
        return out / name

    heatmap = heatmap_image(analysis)
    _save_image(keep("heatmap.png"), heatmap)
    _save_image(keep("overlay.png"), Image.fromarray(overlay_rgba(analysis), "RGBA"))
    _save_image(keep("thumbnail.jpg"), Image.fromarray(analysis.thumbnail))
    _save_npy(keep("probabilities.npy"), analysis.probabilities)
    if analysis.tile_probabilities is not None:
        _save_npy(keep("tile_probabilities.npy"), analysis.tile_probabilities)
    comparison = None
    sampled = truth_for_grid(analysis, truth, truth_cell) if truth is not None else None
    _write_exports(analysis, sampled, keep)
    if sampled is not None:
        metrics = report.get("ground_truth") or {}
        auc = metrics.get("auc")
        caption = f"Per-slide AUC {auc:.3f}" if isinstance(auc, float) else "Per-slide AUC n/a"
        comparison = comparison_image(analysis, sampled, caption)
        _save_image(keep("comparison.png"), comparison)
        _save_npy(keep("truth.npy"), sampled)
    tiles = [
        read_tile(reader, analysis.grid, entry["row"], entry["col"])
        for entry in report["top_tiles"][:8]
    ]
    page = render_page(report, heatmap, tiles, comparison, explanations)
    _save_image(keep("report.png"), page, dpi=(PAGE_DPI, PAGE_DPI))
    _save_image(keep("report.pdf"), page, resolution=PAGE_DPI)
    text = json.dumps(report, indent=2, allow_nan=False).encode()
    atomic_write(keep("report.json"), lambda handle: handle.write(text))
    return written
