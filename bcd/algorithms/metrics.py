"""Classification metrics and the ``#metric`` lines built-in algorithms print.

IDC is the positive class (label 1). Balanced accuracy (BAC) is the mean recall
over classes, F1 is the IDC class's F1, AUC is the ROC AUC of the IDC
probability (the Mann–Whitney statistic with ties counted half). Everything is
plain numpy so the job engine can import this module without torch.
"""

from __future__ import annotations

import math
import re
from typing import TextIO

import numpy as np

TRAIN_METRICS = ("train:loss", "train:accuracy")
VALIDATION_METRICS = (
    "validation:loss",
    "validation:accuracy",
    "validation:auc",
    "validation:bac",
    "validation:f1",
)
#: The seven metrics every algorithm emits each epoch.
METRIC_NAMES = TRAIN_METRICS + VALIDATION_METRICS
#: Extra per-epoch timing metrics the built-in trainer prints.
TIMING_METRICS = ("train:throughput", "train:epoch_seconds")
#: Metrics where smaller is better (for model selection and early stopping).
MINIMIZED_METRICS = frozenset({"train:loss", "validation:loss"})

# A number as printed by :func:`format_metric_line`; "nan" deliberately does not
# match, so an undefined metric (AUC of a one-class set) is not recorded.
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"


def metric_regex(name: str) -> str:
    """The regex that finds metric ``name`` in a built-in algorithm's output.

    Args:
        name: A metric name such as ``"validation:bac"``.

    Returns:
        A regex whose first group is the value.
    """
    return rf"#metric epoch=\d+ {re.escape(name)}={_NUMBER}"


def builtin_metric_definitions() -> list[dict[str, str]]:
    """``[{Name, Regex}]`` for the seven metrics plus the timing metrics."""
    return [{"Name": name, "Regex": metric_regex(name)} for name in METRIC_NAMES + TIMING_METRICS]


def format_metric_line(epoch: int, name: str, value: float) -> str:
    """``#metric epoch=<epoch> <name>=<value>`` (no newline)."""
    text = "nan" if math.isnan(value) else f"{value:.6g}"
    return f"#metric epoch={epoch} {name}={text}"


def emit_metrics(epoch: int, metrics: dict[str, float], stream: TextIO) -> None:
    """Write one ``#metric`` line per metric to ``stream`` and flush it.

    Args:
        epoch: The 1-based epoch the metrics belong to.
        metrics: Metric name to value.
        stream: Where the job engine reads them (the process's stdout).
    """
    for name, value in metrics.items():
        stream.write(format_metric_line(epoch, name, value) + "\n")
    stream.flush()


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the positive class 1.

    Args:
        labels: (N,) int labels; 1 is positive, anything else negative.
        scores: (N,) float scores, higher meaning more likely positive.

    Returns:
        The AUC in [0, 1], or ``nan`` when only one class is present.
    """
    positive = np.asarray(labels) == 1
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    ranks = _average_ranks(np.asarray(scores, dtype=np.float64))
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, loss: float | None = None
) -> dict[str, float]:
    """Accuracy, BAC, F1 (IDC) and AUC of predicted class probabilities.

    Args:
        labels: (N,) int64 true classes.
        probabilities: (N, C) class probabilities (rows sum to 1).
        loss: Mean loss over the same samples, included as ``loss`` when given.

    Returns:
        ``{"loss", "accuracy", "auc", "bac", "f1"}`` (``loss`` only when given).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    predictions = probabilities.argmax(axis=1)
    results: dict[str, float] = {}
    if loss is not None:
        results["loss"] = float(loss)
    results["accuracy"] = float((predictions == labels).mean()) if labels.size else math.nan
    results["auc"] = roc_auc(labels, probabilities[:, 1]) if labels.size else math.nan
    results["bac"] = balanced_accuracy(labels, predictions)
    results["f1"] = f1_score(labels, predictions)
    return results


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``labels``."""
    recalls = [float((predictions[labels == cls] == cls).mean()) for cls in np.unique(labels)]
    return float(np.mean(recalls)) if recalls else math.nan


def f1_score(labels: np.ndarray, predictions: np.ndarray, positive: int = 1) -> float:
    """F1 of class ``positive``; 0 when it is neither present nor predicted."""
    true_positive = int(((predictions == positive) & (labels == positive)).sum())
    false_positive = int(((predictions == positive) & (labels != positive)).sum())
    false_negative = int(((predictions != positive) & (labels == positive)).sum())
    denominator = 2 * true_positive + false_positive + false_negative
    return 2 * true_positive / denominator if denominator else 0.0


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their average rank."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and each run's average rank.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    average = (starts + ends + 1) / 2.0
    run_of_each = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = average[run_of_each]
    return ranks
