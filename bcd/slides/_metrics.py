"""Per-slide metrics against a ground-truth tile map (numpy only, no scikit-learn)."""

from __future__ import annotations

import numpy as np


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney U with average ranks for ties).

    Args:
        labels: 0/1 array.
        scores: Scores of the same length; higher means more likely 1.

    Returns:
        The AUC, or ``None`` when only one class is present.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    negatives = labels.size - positives
    if positives == 0 or negatives == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    # Average rank within each group of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [scores.size]))
    average = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(average, ends - starts)
    rank_sum = ranks[labels].sum()
    return float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, object]:
    """Balanced accuracy, F1, sensitivity, specificity and AUC at a threshold.

    Args:
        labels: 0/1 array of true classes.
        scores: IDC probabilities.
        threshold: A tile is called IDC when its probability is at least this.

    Returns:
        Dict with ``auc``, ``balanced_accuracy``, ``f1``, ``sensitivity``,
        ``specificity``, ``accuracy``, ``tiles``, ``positives`` and the confusion counts;
        a metric is ``None`` when undefined (e.g. no positive tile).
    """
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp = int(np.sum(predicted & labels))
    tn = int(np.sum(~predicted & ~labels))
    fp = int(np.sum(predicted & ~labels))
    fn = int(np.sum(~predicted & labels))
    sensitivity = tp / (tp + fn) if tp + fn else None
    specificity = tn / (tn + fp) if tn + fp else None
    balanced = (
        (sensitivity + specificity) / 2
        if sensitivity is not None and specificity is not None
        else None
    )
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return {
        "auc": roc_auc(labels, scores),
        "balanced_accuracy": balanced,
        "f1": f1,
        "sensitivity": sensitivity,
        "specificity": specificity,
        "accuracy": (tp + tn) / labels.size if labels.size else None,
        "tiles": int(labels.size),
        "positives": int(labels.sum()),
        "true_positives": tp,
        "true_negatives": tn,
        "false_positives": fp,
        "false_negatives": fn,
        "threshold": threshold,
    }
