"""One call from a slide file to every output: open, analyse, report, write."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bcd.errors import NotFoundError
from bcd.neighbourhood import parse_slide_context
from bcd.slides._analysis import AnalysisOptions, Predict, Progress, analyze_slide
from bcd.slides._outputs import write_outputs
from bcd.slides._summary import build_report
from bcd.slides.readers import open_slide

if TYPE_CHECKING:
    from bcd.slides._explain import TileExplainer


def file_facts(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Name, size and SHA-256 of a file, for the report's ``source``.

    A folder (a DICOM series) counts its files' bytes and hashes their
    contents in name order.
    """
    path = Path(path)
    files = sorted(item for item in path.iterdir() if item.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return {
        "filename": name or path.name,
        "size_bytes": sum(file.stat().st_size for file in files),
        "sha256": digest.hexdigest(),
    }


def analyze_file(
    path: str | Path,
    predict: Predict,
    out_dir: str | Path,
    options: AnalysisOptions | None = None,
    truth: np.ndarray | None = None,
    truth_cell: int = 50,
    model: dict[str, Any] | None = None,
    progress: Progress | None = None,
    filename: str | None = None,
    explainer: TileExplainer | None = None,
) -> dict[str, Any]:
    """Analyse a slide file and write heatmap, maps, JSON and page report to ``out_dir``.

    Args:
        path: The slide (any format :func:`bcd.slides.open_slide` reads), or a
            folder holding a DICOM series.
        predict: Tile classifier, uint8 ``(N, 50, 50, 3)`` → ``(N, 2)`` probabilities.
        out_dir: Output folder.
        options: Analysis options.
        truth: Optional ground-truth tile map (-1/0/1) for per-slide metrics.
        truth_cell: Edge of a truth cell in level-0 pixels.
        model: Facts about the classifier for the report: its
            ``decision_threshold`` and ``slide_context`` (``model.json``'s
            object) are used when the options do not override them.
        progress: ``(done, total)`` callback; raising in it cancels.
        filename: Name to show in the report instead of the file's own (uploads).
        explainer: Explain the top tiles with Grad-CAM (``explanations/`` in
            ``out_dir``, a panel on the report page, ``explanations`` in the report).

    Returns:
        The report (also written as ``report.json``).

    Raises:
        BcdError: Subclasses for unreadable slides, bad options or truth.
    """
    if not Path(path).exists():
        raise NotFoundError(f"slide file {str(path)!r} does not exist")
    source = file_facts(path, filename)
    options = options or AnalysisOptions()
    facts = model or {}
    context = parse_slide_context(facts.get("slide_context"))
    options = options.with_threshold(
        context.decision_threshold
        if context is not None and options.context_applies
        else facts.get("decision_threshold")
    )
    with open_slide(path) as reader:
        analysis = analyze_slide(reader, predict, options, progress, context)
        report = build_report(
            analysis, truth=truth, truth_cell=truth_cell, source=source, model=model
        )
        panel = None
        if explainer is not None:
            from bcd.slides._explain import explain_top_tiles

            panel = explain_top_tiles(explainer, reader, analysis, report, out_dir)
        write_outputs(
            analysis,
            report,
            out_dir,
            reader,
            truth=truth,
            truth_cell=truth_cell,
            explanations=panel,
        )
    return report
