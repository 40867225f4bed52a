"""Connected regions and per-slide metrics, checked against reference libraries."""

from __future__ import annotations

import numpy as np
import pytest

from bcd.slides import binary_metrics, label_regions, largest_region, roc_auc, top_tiles


@pytest.mark.parametrize("seed", range(5))
def test_labels_match_scipy_with_8_connectivity(seed: int) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    mask = np.random.default_rng(seed).random((40, 55)) < 0.45
    labels, count = label_regions(mask)
    expected, expected_count = ndimage.label(mask, structure=np.ones((3, 3)))
    assert count == expected_count
    # Same partition: each of our regions is exactly one of scipy's.
    for region in range(1, count + 1):
        assert len(np.unique(expected[labels == region])) == 1
    assert ((labels > 0) == mask).all()


def test_diagonal_cells_join_and_largest_region_wins() -> None:
    mask = np.zeros((6, 6), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one diagonal region of 3
    mask[4:6, 3:6] = True  # a block of 6
    _, count = label_regions(mask)
    assert count == 2
    biggest = largest_region(mask)
    assert biggest is not None and biggest.sum() == 6 and biggest[5, 5]
    assert largest_region(np.zeros((3, 3), bool)) is None


def test_top_tiles_skip_unscored_and_sort() -> None:
    probabilities = np.array([[np.nan, 0.2, 0.9], [0.5, np.nan, 0.95]], dtype=np.float32)
    assert [(r, c) for r, c, _ in top_tiles(probabilities, 3)] == [(1, 2), (0, 2), (1, 0)]
    assert len(top_tiles(probabilities, 10)) == 4


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_scikit_learn_with_ties(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    scores = np.round(rng.random(300) * 0.5 + labels * 0.3, 1)  # many ties
    assert roc_auc(labels, scores) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert roc_auc(np.ones(5), np.arange(5)) is None


def test_binary_metrics_by_hand() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.2, 0.6, 0.1, 0.1, 0.3, 0.2])
    result = binary_metrics(labels, scores, 0.5)
    assert (result["true_positives"], result["false_negatives"]) == (2, 1)
    assert (result["false_positives"], result["true_negatives"]) == (1, 4)
    assert result["sensitivity"] == pytest.approx(2 / 3)
    assert result["specificity"] == pytest.approx(4 / 5)
    assert result["balanced_accuracy"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert result["f1"] == pytest.approx(4 / 6)
    assert binary_metrics(np.zeros(3), np.zeros(3), 0.5)["sensitivity"] is None
