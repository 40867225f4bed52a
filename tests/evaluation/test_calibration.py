"""Temperature scaling and the BAC-optimal threshold."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from bcd.errors import InvalidInputError
from bcd.evaluation import (
    bac_optimal_threshold,
    calibration_curve,
    fit_logistic,
    fit_platt,
    fit_temperature,
    platt_nll,
    probabilities_from_margins,
    softmax,
    temperature_nll,
)


def _overconfident(temperature: float, n: int = 20000, seed: int = 0):
    """Margins whose labels follow sigmoid(margin / temperature)."""
    rng = np.random.default_rng(seed)
    margins = rng.normal(0, 4, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margins / temperature))).astype(int)
    return margins, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5], ids=["sharpen", "keep", "soften"])
def test_fit_recovers_the_generating_temperature(true_temperature: float) -> None:
    margins, labels = _overconfident(true_temperature)
    assert fit_temperature(margins, labels) == pytest.approx(true_temperature, rel=0.08)


def test_fit_is_the_nll_minimum_on_a_grid() -> None:
    margins, labels = _overconfident(1.7, n=3000, seed=1)
    fitted = fit_temperature(margins, labels)
    grid = np.exp(np.linspace(np.log(0.2), np.log(10), 2000))
    best = grid[np.argmin([temperature_nll(margins, labels, t) for t in grid])]
    assert fitted == pytest.approx(best, rel=0.01)
    assert temperature_nll(margins, labels, fitted) <= temperature_nll(margins, labels, 1.0)


def test_two_column_logits_and_margins_agree() -> None:
    margins, labels = _overconfident(2.0, n=2000, seed=2)
    offset = np.random.default_rng(3).normal(0, 1, margins.size)  # softmax ignores shifts
    logits = np.stack([offset, offset + margins], axis=1)
    assert fit_temperature(logits, labels) == pytest.approx(fit_temperature(margins, labels))


def test_nll_matches_sklearn_log_loss() -> None:
    margins, labels = _overconfident(1.0, n=500, seed=4)
    probabilities = softmax(np.stack([np.zeros_like(margins), margins], axis=1), 2.0)
    assert temperature_nll(margins, labels, 2.0) == pytest.approx(
        skm.log_loss(labels, probabilities[:, 1])
    )


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((3, 2)), np.array([0, 1]), "do not match"),
        (np.zeros((0, 2)), np.array([], dtype=int), "no validation"),
        (np.array([[0.0, np.nan]]), np.array([1]), "NaN"),
        (np.zeros((2, 2)), np.array([0, 2]), "labels must lie"),
    ],
    ids=["mismatch", "empty", "nan", "bad-label"],
)
def test_bad_fit_inputs_are_rejected(logits, labels, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fit_temperature(logits, labels)


def test_bac_optimal_threshold_beats_every_other_threshold() -> None:
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 300)
    scores = np.round(np.clip(rng.normal(0.3 + 0.3 * labels, 0.2), 0, 1), 2)
    threshold, bac = bac_optimal_threshold(labels, scores)
    assert bac == pytest.approx(skm.balanced_accuracy_score(labels, scores >= threshold))
    for candidate in np.unique(scores):
        assert skm.balanced_accuracy_score(labels, scores >= candidate) <= bac + 1e-12


def test_bac_optimal_threshold_hand_case() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    scores = np.array([0.05, 0.1, 0.2, 0.15, 0.3, 0.4])
    # Calling >= 0.3 gives BAC (2/3 + 1) / 2; calling >= 0.15 gives (1 + 2/3) / 2.
    # The cuts sit halfway to the next lower score (0.25 and 0.125); 0.25 is
    # closer to 0.5.
    assert bac_optimal_threshold(labels, scores) == pytest.approx((0.25, 5 / 6))


def test_bac_optimal_threshold_separates_a_separable_set_in_the_middle() -> None:
    labels = np.array([0, 0, 1, 1])
    threshold, bac = bac_optimal_threshold(labels, np.array([0.01, 0.02, 0.98, 0.99]))
    assert bac == 1.0
    assert threshold == pytest.approx(0.5)


def test_bac_optimal_threshold_needs_both_classes() -> None:
    with pytest.raises(InvalidInputError, match="only one class"):
        bac_optimal_threshold(np.zeros(5, int), np.linspace(0, 1, 5))


def test_calibration_curve_bins() -> None:
    mean_score, fraction, count = calibration_curve(
        np.array([0, 1, 1, 0]), np.array([0.05, 0.06, 0.95, 0.99]), n_bins=10
    )
    assert count.tolist() == [2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert mean_score[0] == pytest.approx(0.055)
    assert fraction[0] == pytest.approx(0.5)
    assert np.isnan(fraction[5])


def _shifted(temperature: float, bias: float, n: int = 20000, seed: int = 1):
    """Margins whose labels follow sigmoid(margin / temperature + bias)."""
    rng = np.random.default_rng(seed)
    margins = rng.normal(1.0, 4, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-(margins / temperature + bias)))).astype(int)
    return margins, labels


@pytest.mark.parametrize(("true_t", "true_b"), [(1.0, 0.0), (2.0, -1.0), (0.7, 1.5)])
def test_platt_fit_recovers_the_generating_temperature_and_bias(
    true_t: float, true_b: float
) -> None:
    margins, labels = _shifted(true_t, true_b)
    temperature, bias = fit_platt(margins, labels)
    assert temperature == pytest.approx(true_t, rel=0.08)
    assert bias == pytest.approx(true_b, abs=0.1)


def test_platt_fit_is_the_nll_minimum_and_beats_temperature_alone() -> None:
    margins, labels = _shifted(1.5, -1.2)
    temperature, bias = fit_platt(margins, labels)
    best = platt_nll(margins, labels, temperature, bias)
    for dt in (0.9, 1.1):
        for db in (-0.1, 0.0, 0.1):
            assert best <= platt_nll(margins, labels, temperature * dt, bias + db) + 1e-9
    # A shift is exactly what temperature alone cannot fix.
    alone = fit_temperature(margins, labels)
    assert best < platt_nll(margins, labels, alone, 0.0) - 0.01


def test_platt_nll_matches_sklearn_and_averages_views() -> None:
    margins, labels = _shifted(2.0, 0.5, n=500)
    probabilities = probabilities_from_margins(margins[None], 2.0, 0.5)
    assert platt_nll(margins, labels, 2.0, 0.5) == pytest.approx(
        skm.log_loss(labels, probabilities), rel=1e-9
    )
    views = np.stack([margins, margins + 1.0])
    mean = probabilities_from_margins(views, 2.0, 0.5)
    assert platt_nll(views, labels, 2.0, 0.5) == pytest.approx(skm.log_loss(labels, mean), rel=1e-9)


@pytest.mark.parametrize(
    ("margins", "labels", "message"),
    [
        (np.zeros(3), np.array([0, 1]), "do not match"),
        (np.zeros(0), np.zeros(0), "no validation"),
        (np.zeros(2), np.array([0, 2]), "0/1 labels"),
        (np.array([0.0, np.nan]), np.array([0, 1]), "NaN"),
    ],
)
def test_bad_platt_inputs_are_rejected(margins, labels, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fit_platt(margins, labels)


def test_logistic_fit_recovers_the_generating_weights_and_is_the_nll_minimum() -> None:
    rng = np.random.default_rng(4)
    features = rng.normal(size=(20_000, 3))
    truth, bias = np.array([1.5, -0.7, 0.0]), -0.4
    labels = (rng.random(20_000) < 1 / (1 + np.exp(-(features @ truth + bias)))).astype(int)
    weights, fitted_bias = fit_logistic(features, labels)
    np.testing.assert_allclose(weights, truth, atol=0.06)
    assert fitted_bias == pytest.approx(bias, abs=0.05)

    def nll(w: np.ndarray, b: float) -> float:
        z = features @ w + b
        return float(np.mean(np.logaddexp(0, z) - labels * z))

    best = nll(weights, fitted_bias)
    for step in ([0.01, 0, 0], [0, -0.01, 0], [0, 0, 0.01]):
        assert nll(weights + np.array(step), fitted_bias) > best
    assert nll(weights, fitted_bias + 0.01) > best


@pytest.mark.parametrize(
    ("features", "labels", "message"),
    [
        (np.zeros((4, 2)), np.array([0, 1, 0]), "do not match"),
        (np.array([[np.nan], [1.0]]), np.array([0, 1]), "NaN"),
        (np.zeros((3, 1)), np.array([1, 1, 1]), "both classes"),
        (np.array([[-2.0], [-1.0], [1.0], [2.0]]), np.array([0, 0, 1, 1]), "separated perfectly"),
    ],
)
def test_bad_logistic_inputs_are_rejected(features, labels, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        fit_logistic(features, labels)
