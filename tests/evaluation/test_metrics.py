"""Metric values against hand-computed cases and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from bcd.errors import InvalidInputError
from bcd.evaluation import METRICS, point_metrics
from bcd.evaluation._metrics import ScoredPatches, calibration_bins, weighted_metrics

# Three IDC and five non-IDC patches; at threshold 0.5: TP 2, FN 1, FP 1, TN 4.
LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.1, 0.05])


def test_hand_computed_threshold_metrics() -> None:
    values = point_metrics(LABELS, SCORES, threshold=0.5)
    assert values["sensitivity"] == pytest.approx(2 / 3)
    assert values["specificity"] == pytest.approx(4 / 5)
    assert values["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert values["precision"] == pytest.approx(2 / 3)
    assert values["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert values["accuracy"] == pytest.approx(6 / 8)


def test_hand_computed_rank_metrics() -> None:
    values = point_metrics(LABELS, SCORES, threshold=0.5)
    # 0.9 and 0.8 beat all 5 negatives, 0.3 beats 4 of them.
    assert values["roc_auc"] == pytest.approx(14 / 15)
    # Precision at each IDC patch in descending order: 1/1, 2/2, 3/4.
    assert values["pr_auc"] == pytest.approx((1 + 1 + 3 / 4) / 3)


def test_hand_computed_probability_metrics() -> None:
    values = point_metrics(LABELS, SCORES, threshold=0.5)
    likelihood = [0.9, 0.8, 0.3, 0.4, 0.8, 0.9, 0.9, 0.95]
    assert values["log_loss"] == pytest.approx(-sum(map(math.log, likelihood)) / 8)
    assert values["brier"] == pytest.approx(0.9625 / 8)
    # 15 bins: every patch alone in its bin except the two 0.1 negatives (bin 1).
    assert values["ece"] == pytest.approx((0.1 + 0.2 + 0.7 + 0.6 + 0.2 + 0.2 + 0.05) / 8)


def test_threshold_is_inclusive() -> None:
    at = point_metrics(LABELS, SCORES, threshold=0.6)
    above = point_metrics(LABELS, SCORES, threshold=0.6 + 1e-9)
    assert at["specificity"] == pytest.approx(4 / 5)  # 0.6 is called IDC at 0.6
    assert above["specificity"] == pytest.approx(1.0)


def test_ties_count_half_in_roc_auc() -> None:
    values = point_metrics(np.array([1, 0]), np.array([0.5, 0.5]), threshold=0.5)
    assert values["roc_auc"] == pytest.approx(0.5)


def test_undefined_metrics_are_nan_not_zero() -> None:
    values = point_metrics(np.zeros(4, int), np.array([0.1, 0.2, 0.7, 0.3]), threshold=0.5)
    assert math.isnan(values["sensitivity"])
    assert math.isnan(values["roc_auc"])
    assert math.isnan(values["balanced_accuracy"])
    assert values["specificity"] == pytest.approx(3 / 4)


def test_all_negative_calls_have_zero_f1_and_undefined_precision() -> None:
    values = point_metrics(LABELS, np.zeros(8), threshold=0.5)
    assert values["f1"] == 0.0
    assert math.isnan(values["precision"])
    assert values["balanced_accuracy"] == pytest.approx(0.5)
    assert values["accuracy"] == pytest.approx(5 / 8)


def test_calibration_bins_put_one_in_the_last_bin() -> None:
    bins = calibration_bins(np.array([0.0, 1 / 15 - 1e-12, 1 / 15, 0.999, 1.0]), 15)
    assert bins.tolist() == [0, 0, 1, 14, 14]


@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda seed: f"seed{seed}")
def test_point_metrics_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 400)
    # Rounded scores create many ties, the hard case for rank metrics.
    scores = np.round(np.clip(rng.normal(0.35 + 0.3 * labels, 0.25), 0, 1), 2)
    called = (scores >= 0.5).astype(int)
    values = point_metrics(labels, scores, threshold=0.5)
    assert values["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert values["pr_auc"] == pytest.approx(skm.average_precision_score(labels, scores))
    assert values["f1"] == pytest.approx(skm.f1_score(labels, called))
    assert values["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(labels, called))
    assert values["precision"] == pytest.approx(skm.precision_score(labels, called))
    assert values["sensitivity"] == pytest.approx(skm.recall_score(labels, called))
    assert values["brier"] == pytest.approx(skm.brier_score_loss(labels, scores))
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    assert values["log_loss"] == pytest.approx(skm.log_loss(labels, clipped))


def test_weighted_metrics_match_sklearn_sample_weights() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300), 1)
    weights = rng.integers(0, 4, (3, 300)).astype(float)
    # Each patch its own group, so group weights are sample weights.
    patches = ScoredPatches(labels, scores, groups=np.arange(300))
    values = weighted_metrics(patches, weights, threshold=0.5)
    assert set(values) == set(METRICS)
    for row in range(3):
        weight = weights[row]
        assert values["roc_auc"][row] == pytest.approx(
            skm.roc_auc_score(labels, scores, sample_weight=weight)
        )
        assert values["pr_auc"][row] == pytest.approx(
            skm.average_precision_score(labels, scores, sample_weight=weight)
        )
        assert values["f1"][row] == pytest.approx(
            skm.f1_score(labels, scores >= 0.5, sample_weight=weight)
        )


def test_mismatched_lengths_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match="differ in length"):
        point_metrics(np.array([0, 1]), np.array([0.5]), threshold=0.5)
