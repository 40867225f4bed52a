"""Binary classification metrics over weighted groups of patches, vectorised over resamples.

Patches belong to G groups (patients). Every metric is computed from group
weights: a matrix ``weights`` of shape (R, G) gives R weightings of the same
groups, and a patch counts as often as its group's weight. The point estimate
is the weighting ``ones((1, G))``; a patient bootstrap replicate weights every
patient by how many times it was drawn. One code path serves both, so the
interval and the estimate can never disagree on a definition.

Most metrics are sums over patches, so they are computed from per-group sums
once and a (R, G) matrix product per call. ROC AUC is a sum over (IDC, non-IDC)
pairs, so a (G, G) matrix of concordant pairs between groups gives it as a
quadratic form. Average precision alone needs the weighted patches in score
order per replicate.

Definitions (label 1 = IDC is the positive class; ``score`` is P(IDC)):

- a patch is predicted IDC when ``score >= threshold``;
- sensitivity = TP / (TP + FN), specificity = TN / (TN + FP),
  balanced accuracy = (sensitivity + specificity) / 2,
  precision = TP / (TP + FP), F1 = 2 TP / (2 TP + FP + FN);
- ROC AUC: the probability that a random IDC patch scores above a random
  non-IDC one, ties counted half (as :func:`sklearn.metrics.roc_auc_score`);
- PR AUC: average precision, sum over descending thresholds of
  (recall step) x precision (as :func:`sklearn.metrics.average_precision_score`);
- log loss: mean negative log-likelihood, probabilities clipped to
  ``[PROBABILITY_EPS, 1 - PROBABILITY_EPS]``;
- Brier score: mean of (score - label)^2;
- ECE: ``ECE_BINS`` equal-width bins of P(IDC) over [0, 1] (the last bin
  closed), sum over bins of (bin weight / total) x |mean P(IDC) - IDC fraction|.

A ratio with a zero denominator (no IDC patch in a resample, for instance) is
NaN: undefined, never silently 0.
"""

from __future__ import annotations

import numpy as np

from bcd.errors import InvalidInputError

PROBABILITY_EPS = 1e-7
ECE_BINS = 15

#: Metric names in report order, with what each means.
METRICS: dict[str, str] = {
    "balanced_accuracy": "mean of sensitivity and specificity",
    "f1": "F1 of the IDC class",
    "sensitivity": "recall of IDC patches (true positive rate)",
    "specificity": "recall of non-IDC patches (true negative rate)",
    "precision": "positive predictive value of an IDC call",
    "accuracy": "fraction of patches classified correctly",
    "roc_auc": "area under the ROC curve",
    "pr_auc": "area under the precision-recall curve (average precision)",
    "log_loss": "mean negative log-likelihood (lower is better)",
    "brier": "mean squared error of P(IDC) (lower is better)",
    "ece": f"expected calibration error, {ECE_BINS} equal-width bins of P(IDC) (lower is better)",
}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan
        )


class ScoredPatches:
    """Labels and scores of N patches in G groups, with the per-group sums precomputed.

    Args:
        labels: (N,) 0/1 ground truth, 1 = IDC.
        scores: (N,) predicted P(IDC) in [0, 1].
        groups: (N,) group index of each patch in ``[0, G)`` (default: one group).

    Raises:
        InvalidInputError: Mismatched lengths.
    """

    def __init__(
        self, labels: np.ndarray, scores: np.ndarray, groups: np.ndarray | None = None
    ) -> None:
        self.labels = np.asarray(labels).astype(np.int64).ravel()
        self.scores = np.asarray(scores, dtype=np.float64).ravel()
        if groups is None:
            groups = np.zeros(self.labels.size, dtype=np.int64)
        self.groups = np.asarray(groups).astype(np.int64).ravel()
        if not self.labels.shape == self.scores.shape == self.groups.shape:
            raise InvalidInputError(
                f"{self.labels.size} labels, {self.scores.size} scores and "
                f"{self.groups.size} group indices differ in length; give one of each per patch"
            )
        self.n_groups = int(self.groups.max()) + 1 if self.groups.size else 1
        positive = self.labels == 1
        labels = self.labels.astype(np.float64)
        self.patches = self._per_group(np.ones_like(labels))  # (G,)
        self.positives = self._per_group(labels)  # (G,)
        clipped = np.clip(self.scores, PROBABILITY_EPS, 1 - PROBABILITY_EPS)
        nll = -(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped))
        self.nll = self._per_group(nll)  # (G,)
        self.squared_error = self._per_group((self.scores - labels) ** 2)  # (G,)
        bins = calibration_bins(self.scores)
        gap = np.zeros(self.n_groups * ECE_BINS)
        np.add.at(gap, self.groups * ECE_BINS + bins, self.scores - labels)
        self.calibration_gap = gap.reshape(self.n_groups, ECE_BINS)  # (G, bins)
        self.concordance = _concordance(self.scores, positive, self.groups, self.n_groups)
        # Descending score order, and the last position of each run of equal scores.
        self.order = np.argsort(-self.scores, kind="stable")
        ordered = self.scores[self.order]
        self.run_ends = np.flatnonzero(np.r_[ordered[1:] != ordered[:-1], True])
        self.ordered_positive = positive[self.order].astype(np.float64)
        self.ordered_groups = self.groups[self.order]

    def _per_group(self, values: np.ndarray) -> np.ndarray:
        return np.bincount(self.groups, values, minlength=self.n_groups)

    @property
    def size(self) -> int:
        """Number of patches N."""
        return int(self.labels.size)


def _concordance(
    scores: np.ndarray, positive: np.ndarray, groups: np.ndarray, n_groups: int
) -> np.ndarray:
    """(G, G): pairs (IDC patch of group p, non-IDC patch of group q) ranked right, ties half."""
    concordance = np.zeros((n_groups, n_groups))
    positive_scores, positive_groups = scores[positive], groups[positive]
    negative_scores, negative_groups = scores[~positive], groups[~positive]
    for group in np.unique(negative_groups):
        negatives = np.sort(negative_scores[negative_groups == group])
        below = np.searchsorted(negatives, positive_scores, side="left")
        tied = np.searchsorted(negatives, positive_scores, side="right") - below
        concordance[:, group] = np.bincount(positive_groups, below + 0.5 * tied, minlength=n_groups)
    return concordance


def confusion_counts(
    patches: ScoredPatches, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Weighted TP, FP, TN, FN per weighting.

    Args:
        patches: The scored patches.
        weights: (R, G) group weights.
        threshold: A patch is called IDC when its score is ``>= threshold``.

    Returns:
        ``{"tp", "fp", "tn", "fn"}``, each (R,).
    """
    called = patches.scores >= threshold
    true_pos = weights @ patches._per_group((called & (patches.labels == 1)).astype(np.float64))
    called_pos = weights @ patches._per_group(called.astype(np.float64))
    positives = weights @ patches.positives
    negatives = weights @ patches.patches - positives
    return {
        "tp": true_pos,
        "fp": called_pos - true_pos,
        "tn": negatives - (called_pos - true_pos),
        "fn": positives - true_pos,
    }


def threshold_metrics(counts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, BAC, precision, F1 and accuracy from counts.

    Args:
        counts: Output of :func:`confusion_counts`.

    Returns:
        Metric name -> (R,) values (NaN where undefined).
    """
    tp, fp, tn, fn = counts["tp"], counts["fp"], counts["tn"], counts["fn"]
    sensitivity = _ratio(tp, tp + fn)
    specificity = _ratio(tn, tn + fp)
    return {
        "balanced_accuracy": (sensitivity + specificity) / 2,
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": sensitivity,
        "specificity": specificity,
        "precision": _ratio(tp, tp + fp),
        "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
    }


def rank_metrics(patches: ScoredPatches, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ROC AUC and average precision per weighting, ties handled as sklearn does.

    Args:
        patches: The scored patches.
        weights: (R, G) group weights.

    Returns:
        ``{"roc_auc", "pr_auc"}``, each (R,).
    """
    positives = weights @ patches.positives  # (R,)
    negatives = weights @ patches.patches - positives
    concordant = np.einsum("rp,pq,rq->r", weights, patches.concordance, weights)
    roc_auc = _ratio(concordant, positives * negatives)

    # Average precision: at each threshold (the end of a run of equal scores),
    # the precision there times the recall the run adds.
    ordered = weights[:, patches.ordered_groups]  # (R, N) weight of each patch, by score
    true_pos = np.cumsum(ordered * patches.ordered_positive, axis=1)[:, patches.run_ends]
    called = np.cumsum(ordered, axis=1)[:, patches.run_ends]  # (R, K)
    precision = np.divide(true_pos, called, out=np.zeros_like(true_pos), where=called > 0)
    added = np.diff(true_pos, axis=1, prepend=0.0)
    pr_auc = _ratio((added * precision).sum(axis=1), positives)
    return {"roc_auc": roc_auc, "pr_auc": pr_auc}


def probability_metrics(patches: ScoredPatches, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Log loss, Brier score and expected calibration error per weighting.

    Args:
        patches: The scored patches.
        weights: (R, G) group weights.

    Returns:
        ``{"log_loss", "brier", "ece"}``, each (R,).
    """
    total = weights @ patches.patches
    return {
        "log_loss": _ratio(weights @ patches.nll, total),
        "brier": _ratio(weights @ patches.squared_error, total),
        "ece": _ratio(np.abs(weights @ patches.calibration_gap).sum(axis=1), total),
    }


def calibration_bins(scores: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """The ECE bin of each score: ``floor(score * n_bins)``, 1.0 in the last bin.

    Args:
        scores: (N,) probabilities in [0, 1].
        n_bins: Number of equal-width bins.

    Returns:
        (N,) int bin indices in ``[0, n_bins)``.
    """
    return np.clip(np.floor(np.asarray(scores) * n_bins).astype(np.int64), 0, n_bins - 1)


def weighted_metrics(
    patches: ScoredPatches, weights: np.ndarray, threshold: float
) -> dict[str, np.ndarray]:
    """Every metric of :data:`METRICS` for each of R weightings of the groups.

    Args:
        patches: The scored patches.
        weights: (R, G) non-negative group weights.
        threshold: Decision threshold on P(IDC).

    Returns:
        Metric name -> (R,) values, in :data:`METRICS` order.
    """
    weights = np.asarray(weights, dtype=np.float64)
    values = threshold_metrics(confusion_counts(patches, weights, threshold))
    values.update(rank_metrics(patches, weights))
    values.update(probability_metrics(patches, weights))
    return {name: values[name] for name in METRICS}


def point_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Every metric of :data:`METRICS` on the patches as they are.

    Args:
        labels: (N,) 0/1 ground truth.
        scores: (N,) predicted P(IDC).
        threshold: Decision threshold on P(IDC).

    Returns:
        Metric name -> value (NaN where undefined).

    Raises:
        InvalidInputError: Mismatched lengths.
    """
    patches = ScoredPatches(labels, scores)
    values = weighted_metrics(patches, np.ones((1, 1)), threshold)
    return {name: float(value[0]) for name, value in values.items()}
