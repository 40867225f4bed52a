"""The bootstrap resamples patients, not patches."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from bcd.errors import InvalidInputError
from bcd.evaluation import bootstrap_metrics, patient_multiplicities
from bcd.evaluation._bootstrap import patient_indices
from bcd.evaluation._metrics import ScoredPatches, weighted_metrics


def _two_patients() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient A: 200 patches all right; patient B: 200 patches all wrong."""
    labels = np.tile([0, 1], 200)  # (400,)
    right = labels[:200].astype(float)
    wrong = 1.0 - labels[200:]
    scores = np.r_[right, wrong]
    patients = np.array(["A"] * 200 + ["B"] * 200)
    return labels, scores, patients


def test_interval_spans_whole_patients_not_patches() -> None:
    labels, scores, patients = _two_patients()
    intervals = bootstrap_metrics(labels, scores, patients, 0.5, n_replicates=400, seed=3)
    accuracy = intervals["accuracy"]
    assert accuracy.value == pytest.approx(0.5)
    # Drawing {A, A} gives 1.0 and {B, B} gives 0.0, each with probability 1/4.
    # Resampling 400 patches instead would give roughly 0.45-0.55.
    assert accuracy.low == pytest.approx(0.0)
    assert accuracy.high == pytest.approx(1.0)


def test_replicates_only_take_values_of_whole_patient_draws() -> None:
    labels, scores, patients = _two_patients()
    _, index = patient_indices(patients)
    weights = patient_multiplicities(2, 200, seed=1)
    accuracy = weighted_metrics(ScoredPatches(labels, scores, index), weights, 0.5)["accuracy"]
    assert set(np.round(accuracy, 12)) <= {0.0, 0.5, 1.0}


def test_each_replicate_equals_sklearn_on_the_explicitly_resampled_patients() -> None:
    rng = np.random.default_rng(0)
    n_patients = 12
    sizes = rng.integers(5, 40, n_patients)
    patients = np.repeat([f"p{i:02d}" for i in range(n_patients)], sizes)
    labels = rng.integers(0, 2, patients.size)
    scores = np.round(np.clip(rng.normal(0.3 + 0.4 * labels, 0.3), 0, 1), 2)
    multiplicities = patient_multiplicities(n_patients, 5, seed=11)
    ids, index = patient_indices(patients)
    values = weighted_metrics(ScoredPatches(labels, scores, index), multiplicities, 0.5)
    for row in range(5):
        chosen = np.repeat(np.arange(n_patients), multiplicities[row].astype(int))
        take = np.concatenate([np.flatnonzero(patients == ids[p]) for p in chosen])
        assert values["roc_auc"][row] == pytest.approx(
            skm.roc_auc_score(labels[take], scores[take])
        )
        assert values["balanced_accuracy"][row] == pytest.approx(
            skm.balanced_accuracy_score(labels[take], scores[take] >= 0.5)
        )
        assert values["pr_auc"][row] == pytest.approx(
            skm.average_precision_score(labels[take], scores[take])
        )


def test_duplicating_patches_does_not_narrow_the_interval() -> None:
    rng = np.random.default_rng(5)
    patients = np.repeat([f"p{i}" for i in range(15)], 20)
    labels = rng.integers(0, 2, patients.size)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.3), 0, 1)
    once = bootstrap_metrics(labels, scores, patients, 0.5, n_replicates=300, seed=2)
    tenfold = bootstrap_metrics(
        np.tile(labels, 10), np.tile(scores, 10), np.tile(patients, 10), 0.5, 300, seed=2
    )
    for name in ("balanced_accuracy", "roc_auc", "ece"):
        assert tenfold[name].low == pytest.approx(once[name].low)
        assert tenfold[name].high == pytest.approx(once[name].high)


def test_multiplicities_are_seeded_and_sum_to_patient_count() -> None:
    first = patient_multiplicities(9, 50, seed=4)
    assert first.shape == (50, 9)
    assert np.all(first.sum(axis=1) == 9)
    assert np.array_equal(first, patient_multiplicities(9, 50, seed=4))
    assert not np.array_equal(first, patient_multiplicities(9, 50, seed=5))


def test_undefined_replicates_are_counted_and_left_out() -> None:
    # One patient holds every IDC patch; replicates without it have no sensitivity.
    patients = np.array(["A"] * 4 + ["B"] * 4 + ["C"] * 4)
    labels = np.array([1, 1, 0, 0] + [0] * 8)
    scores = np.array([0.9, 0.6, 0.2, 0.1] + [0.3] * 8)
    intervals = bootstrap_metrics(labels, scores, patients, 0.5, n_replicates=300, seed=0)
    sensitivity = intervals["sensitivity"]
    # P(A not drawn in 3 draws) = (2/3)^3 ~ 0.30.
    assert 50 < sensitivity.undefined < 140
    assert sensitivity.low == pytest.approx(1.0)
    assert intervals["specificity"].undefined == 0


def test_point_estimate_comes_with_no_replicates() -> None:
    labels, scores, patients = _two_patients()
    intervals = bootstrap_metrics(labels, scores, patients, 0.5, n_replicates=0)
    assert intervals["accuracy"].value == pytest.approx(0.5)
    assert np.isnan(intervals["accuracy"].low)
    assert intervals["accuracy"].as_dict()["ci_low"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patient_ids": np.array(["a"])}, "patient ids"),
        ({"n_replicates": -1}, "replicates"),
        ({"confidence": 1.5}, "confidence"),
    ],
    ids=["wrong-patient-count", "negative-replicates", "bad-confidence"],
)
def test_bad_arguments_are_rejected(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "labels": np.array([0, 1]),
        "scores": np.array([0.2, 0.8]),
        "patient_ids": np.array(["a", "b"]),
        "threshold": 0.5,
    }
    arguments.update(kwargs)
    with pytest.raises(InvalidInputError, match=message):
        bootstrap_metrics(**arguments)  # type: ignore[arg-type]


def test_empty_input_is_rejected() -> None:
    with pytest.raises(InvalidInputError, match="no patches"):
        bootstrap_metrics(np.array([]), np.array([]), np.array([]), 0.5)
