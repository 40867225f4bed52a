"""Classification metrics against scikit-learn's reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as reference

from bcd.algorithms.metrics import (
    balanced_accuracy,
    classification_metrics,
    emit_metrics,
    f1_score,
    roc_auc,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) * 0.5 + labels * 0.3, 2)  # rounding makes ties
    assert roc_auc(labels, scores) == pytest.approx(reference.roc_auc_score(labels, scores))


def test_auc_is_undefined_for_one_class() -> None:
    assert math.isnan(roc_auc(np.ones(5, int), np.linspace(0, 1, 5)))


def test_bac_and_f1_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 300)
    predictions = np.where(rng.random(300) < 0.8, labels, 1 - labels)
    assert balanced_accuracy(labels, predictions) == pytest.approx(
        reference.balanced_accuracy_score(labels, predictions)
    )
    assert f1_score(labels, predictions) == pytest.approx(reference.f1_score(labels, predictions))


def test_f1_is_zero_without_positives() -> None:
    assert f1_score(np.zeros(4, int), np.zeros(4, int)) == 0.0


def test_classification_metrics_from_probabilities() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array(
        [[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.45, 0.55], [0.7, 0.3]]
    )
    result = classification_metrics(labels, probabilities, loss=0.5)
    assert result["loss"] == 0.5
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["bac"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["auc"] == pytest.approx(reference.roc_auc_score(labels, probabilities[:, 1]))


def test_emit_metrics_writes_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    import sys

    emit_metrics(2, {"train:loss": 0.25, "validation:auc": float("nan")}, sys.stdout)
    assert capsys.readouterr().out.splitlines() == [
        "#metric epoch=2 train:loss=0.25",
        "#metric epoch=2 validation:auc=nan",
    ]
