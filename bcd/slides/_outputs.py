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
from bcd.slides._render import comparison_image, heatmap_image, overlay_rgba
from bcd.slides._summary import truth_for_grid
from bcd.slides.readers import BaseSlideReader

#: The files :func:`write_outputs` produces (``comparison.png`` and
#: ``truth.npy`` only with ground truth).
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


def write_outputs(
    analysis: SlideAnalysis,
    report: dict[str, Any],
    out_dir: str | Path,
    reader: BaseSlideReader,
    truth: np.ndarray | None = None,
    truth_cell: int = 50,
) -> dict[str, Path]:
    """Write every output of an analysis into ``out_dir``.

    Args:
        analysis: The analysis.
        report: Its report (:func:`bcd.slides.build_report`).
        out_dir: Folder to write into (created if missing).
        reader: The open slide, to crop the top tiles for the report page.
        truth: The ground truth given to :func:`build_report`, if any.
        truth_cell: Its cell size in level-0 pixels.

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
    comparison = None
    if truth is not None:
        sampled = truth_for_grid(analysis, truth, truth_cell)
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
    page = render_page(report, heatmap, tiles, comparison)
    _save_image(keep("report.png"), page, dpi=(PAGE_DPI, PAGE_DPI))
    _save_image(keep("report.pdf"), page, resolution=PAGE_DPI)
    text = json.dumps(report, indent=2, allow_nan=False).encode()
    atomic_write(keep("report.json"), lambda handle: handle.write(text))
    return written
