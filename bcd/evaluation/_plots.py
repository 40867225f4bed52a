"""The report's figures as PNG files: ROC, PR, calibration, confusion matrix, per-patient BAC.

matplotlib is imported inside :func:`write_plots` (it comes with ``bcd[train]``)
and used through its object API with the Agg canvas, so nothing touches the
global pyplot state or needs a display.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bcd.errors import require
from bcd.evaluation._calibration import calibration_curve
from bcd.evaluation._metrics import ECE_BINS

if TYPE_CHECKING:
    from bcd.evaluation._report import EvaluationResult

#: File name of each plot inside the report folder.
PLOT_FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "calibration": "calibration.png",
    "confusion": "confusion.png",
    "per_patient": "per_patient_bac.png",
}

_IDC_COLOUR = "#b2182b"
_OTHER_COLOUR = "#2166ac"


def roc_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1).

    Args:
        labels: (N,) 0/1 ground truth (both classes present).
        scores: (N,) predicted P(IDC).

    Returns:
        ``(fpr, tpr)`` arrays.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_pos = np.r_[0, np.cumsum(positive)[last]]
    false_pos = np.r_[0, np.cumsum(~positive)[last]]
    return false_pos / max(false_pos[-1], 1), true_pos / max(true_pos[-1], 1)


def pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold, highest threshold first.

    Args:
        labels: (N,) 0/1 ground truth.
        scores: (N,) predicted P(IDC).

    Returns:
        ``(recall, precision)`` arrays.
    """
    order = np.argsort(-scores, kind="stable")
    sorted_scores, positive = scores[order], labels[order] == 1
    last = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_pos = np.cumsum(positive)[last]
    called = np.cumsum(np.ones_like(positive, dtype=np.int64))[last]
    return true_pos / max(int(positive.sum()), 1), true_pos / called


def _save(figure: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    partial = path.with_name(f".{path.name}.partial")
    figure.savefig(partial, format="png", dpi=110)
    os.replace(partial, path)  # a reader never sees half a PNG


def _ci_label(result: EvaluationResult, metric: str) -> str:
    interval = result.metrics[metric]
    if np.isnan(interval.low):
        return f"{interval.value:.3f}"
    return f"{interval.value:.3f} (95% CI {interval.low:.3f}-{interval.high:.3f})"


def _roc(figure: Any, result: EvaluationResult) -> None:
    axes = figure.add_subplot()
    fpr, tpr = roc_points(result.labels, result.scores)
    axes.plot(fpr, tpr, color=_IDC_COLOUR, label=f"model, AUC {_ci_label(result, 'roc_auc')}")
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    sensitivity = result.metrics["sensitivity"].value
    specificity = result.metrics["specificity"].value
    axes.scatter(
        [1 - specificity],
        [sensitivity],
        color="black",
        zorder=3,
        label=f"threshold {result.threshold:.3f}",
    )
    axes.set(
        xlabel="1 - specificity (false positive rate)",
        ylabel="sensitivity",
        title="ROC curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    axes.legend(loc="lower right")


def _pr(figure: Any, result: EvaluationResult) -> None:
    axes = figure.add_subplot()
    recall, precision = pr_points(result.labels, result.scores)
    axes.step(
        recall,
        precision,
        where="post",
        color=_IDC_COLOUR,
        label=f"model, AP {_ci_label(result, 'pr_auc')}",
    )
    prevalence = float(np.mean(result.labels))
    axes.axhline(
        prevalence, linestyle="--", color="grey", label=f"chance (IDC fraction {prevalence:.2f})"
    )
    axes.scatter(
        [result.metrics["sensitivity"].value],
        [result.metrics["precision"].value],
        color="black",
        zorder=3,
        label=f"threshold {result.threshold:.3f}",
    )
    axes.set(
        xlabel="recall (sensitivity)",
        ylabel="precision",
        title="Precision-recall curve",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    axes.legend(loc="lower left")


def _calibration(figure: Any, result: EvaluationResult) -> None:
    curve, histogram = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    mean_score, fraction, count = calibration_curve(result.labels, result.scores, ECE_BINS)
    filled = count > 0
    curve.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    curve.plot(
        mean_score[filled],
        fraction[filled],
        marker="o",
        color=_IDC_COLOUR,
        label=f"model, ECE {_ci_label(result, 'ece')}",
    )
    curve.set(
        ylabel="observed IDC fraction",
        xlim=(0, 1),
        ylim=(0, 1),
        title=(
            f"Calibration ({ECE_BINS} equal-width bins, T = {result.temperature:.3g}, "
            f"b = {result.logit_bias:.3g})"
        ),
    )
    curve.legend(loc="upper left")
    edges = np.linspace(0, 1, ECE_BINS + 1)
    histogram.bar(
        edges[:-1], count, width=1 / ECE_BINS, align="edge", color="lightgrey", edgecolor="grey"
    )
    histogram.set(xlabel="predicted P(IDC)", ylabel="patches", yscale="log")


def _confusion(figure: Any, result: EvaluationResult) -> None:
    axes = figure.add_subplot()
    labels, called = result.labels, result.scores >= result.threshold
    matrix = np.array(
        [[np.sum((labels == truth) & (called == guess)) for guess in (0, 1)] for truth in (0, 1)]
    )
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for truth in (0, 1):
        for guess in (0, 1):
            axes.text(
                guess,
                truth,
                f"{matrix[truth, guess]}\n({rates[truth, guess]:.1%})",
                ha="center",
                va="center",
                color="white" if rates[truth, guess] > 0.5 else "black",
            )
    names = list(result.class_names)
    axes.set_xticks([0, 1], [f"called {name}" for name in names])
    axes.set_yticks([0, 1], [f"truly {name}" for name in names])
    axes.set_title(f"Confusion matrix at threshold {result.threshold:.3f}")


def _per_patient(figure: Any, result: EvaluationResult) -> None:
    from matplotlib.patches import Patch

    axes = figure.add_subplot()
    rows = sorted(
        result.per_patient,
        key=lambda row: (
            row.balanced_accuracy if row.balanced_accuracy is not None else row.accuracy
        ),
    )
    values = [
        row.balanced_accuracy if row.balanced_accuracy is not None else row.accuracy for row in rows
    ]
    both = [row.balanced_accuracy is not None for row in rows]
    colours = [_IDC_COLOUR if flag else "lightgrey" for flag in both]
    positions = np.arange(len(rows))
    axes.bar(positions, values, color=colours)
    overall = result.metrics["balanced_accuracy"].value
    pooled = axes.axhline(overall, linestyle="--", color="black")
    show_ids = len(rows) <= 60
    axes.set_xticks(
        positions, [row.patient_id for row in rows] if show_ids else [], rotation=90, fontsize=7
    )
    axes.set(
        ylim=(0, 1.02),
        ylabel="balanced accuracy",
        xlabel="patient",
        title=f"Per-patient balanced accuracy ({len(rows)} patients)",
    )
    axes.legend(
        [pooled, Patch(color=_IDC_COLOUR), Patch(color="lightgrey")],
        [
            f"pooled BAC {overall:.3f}",
            "BAC (patient has both classes)",
            "accuracy (patient has one class)",
        ],
        loc="lower right",
        fontsize=8,
    )


def write_plots(result: EvaluationResult, out_dir: Path) -> dict[str, str]:
    """Write every plot of the report into ``out_dir``.

    Args:
        result: The evaluation to draw.
        out_dir: An existing folder.

    Returns:
        Plot name -> file name (relative to ``out_dir``). ROC and PR are left
        out when the patches hold only one class.

    Raises:
        DependencyMissingError: matplotlib is not installed.
    """
    require("matplotlib", "train")
    from matplotlib.figure import Figure

    drawers = {
        "roc": (_roc, (6, 5)),
        "pr": (_pr, (6, 5)),
        "calibration": (_calibration, (6, 6)),
        "confusion": (_confusion, (5, 4.5)),
        "per_patient": (_per_patient, (max(6.0, 0.22 * len(result.per_patient) + 2), 4.5)),
    }
    both_classes = 0 < int(np.sum(result.labels)) < result.labels.size
    written: dict[str, str] = {}
    for name, (draw, size) in drawers.items():
        if name in ("roc", "pr") and not both_classes:
            continue
        figure = Figure(figsize=size, layout="constrained")
        draw(figure, result)
        _save(figure, out_dir / PLOT_FILES[name])
        written[name] = PLOT_FILES[name]
    return written
