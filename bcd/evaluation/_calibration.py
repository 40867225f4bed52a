"""Calibration and decision thresholds, all fitted on validation data.

Temperature scaling divides the logits by one scalar T > 0 before the
softmax; it keeps every ranking (so AUC is unchanged) and fixes
over-confidence. T is chosen to minimise the negative log-likelihood of the
validation labels; the NLL is convex in 1/T, so a bracketing golden-section
search over log T finds the optimum reliably without scipy.

Temperature alone cannot undo a shift: a model trained with a class-balanced
loss believes IDC is as common as no IDC, so its probabilities run high on
data where a third of the patches are IDC. Platt scaling,
``P(IDC) = sigmoid(m / T + b)`` on the IDC margin ``m = z_IDC − z_noIDC``,
adds the bias ``b`` for that (:func:`fit_platt`). It is still monotone, so
AUC is unchanged; only the decision threshold moves, and
:func:`bac_optimal_threshold` refits it on the calibrated probabilities.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np

from bcd.errors import InvalidInputError
from bcd.evaluation._metrics import calibration_bins
from bcd.neighbourhood import sigmoid

logger = logging.getLogger(__name__)

#: The temperatures :func:`fit_temperature` and :func:`fit_platt` search.
TEMPERATURE_RANGE = (0.01, 100.0)
#: The logit biases :func:`fit_platt` searches.
BIAS_RANGE = (-20.0, 20.0)
_LOG_T_RANGE = (math.log(TEMPERATURE_RANGE[0]), math.log(TEMPERATURE_RANGE[1]))
_GOLDEN = (math.sqrt(5) - 1) / 2


def _as_logits(logits: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Any accepted logits form -> (V, N, C) float64, and labels -> (N,) int64."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if logits.ndim == 1:
        # A single column is the IDC-vs-no-IDC margin z1 - z0.
        logits = np.stack([np.zeros_like(logits), logits], axis=1)
    if logits.ndim == 2:
        logits = logits[None]
    if logits.ndim != 3 or logits.shape[1] != labels.size:
        raise InvalidInputError(
            f"logits of shape {logits.shape} do not match {labels.size} labels; "
            "give (N, C) logits, (N,) margins or (V, N, C) view logits, one label per patch"
        )
    if labels.size == 0:
        raise InvalidInputError("no validation samples to fit on")
    if labels.min() < 0 or labels.max() >= logits.shape[2]:
        raise InvalidInputError(f"labels must lie in [0, {logits.shape[2] - 1}]")
    if not np.isfinite(logits).all():
        raise InvalidInputError("logits contain NaN or infinity; the model output is broken")
    return logits, labels


def _logsumexp(values: np.ndarray, axis: int) -> np.ndarray:
    top = values.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis=axis) + np.log(np.exp(values - top).sum(axis=axis))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities ``softmax(logits / temperature)`` along the last axis.

    Args:
        logits: (N, C) logits.
        temperature: T > 0.

    Returns:
        (N, C) float64 probabilities.
    """
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def temperature_nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)``.

    Args:
        logits: (N, C) logits, (N,) IDC margins, or (V, N, C) logits of V
            augmented views whose probabilities are averaged (as TTA serving does).
        labels: (N,) class indices.
        temperature: T > 0.

    Returns:
        The mean NLL in nats.
    """
    logits, labels = _as_logits(logits, labels)
    scaled = logits / temperature  # (V, N, C)
    log_probabilities = scaled[:, np.arange(labels.size), labels] - _logsumexp(scaled, axis=2)
    views = logits.shape[0]
    log_mean = _logsumexp(log_probabilities, axis=0) - np.log(views)  # (N,)
    return float(-np.mean(log_mean))


def fit_temperature(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-5) -> float:
    """The temperature T minimising validation NLL of ``softmax(logits / T)``.

    Args:
        logits: (N, C) validation logits, (N,) IDC margins ``z1 - z0``, or
            (V, N, C) logits of V augmented views whose probabilities are averaged.
        labels: (N,) true class indices.
        tolerance: Stop when the bracket on log T is narrower than this.

    Returns:
        T in :data:`TEMPERATURE_RANGE`; write it as ``temperature`` into
        ``model.json``. A T at the edge of the range means the validation
        patches are perfectly separated and the fit is meaningless (a warning
        is logged).

    Raises:
        InvalidInputError: On mismatched shapes, an empty set or non-finite logits.
    """
    logits, labels = _as_logits(logits, labels)
    log_t, _ = _golden_minimum(
        lambda log_t: temperature_nll(logits, labels, math.exp(log_t)), *_LOG_T_RANGE, tolerance
    )
    fitted = math.exp(log_t)
    if min(abs(log_t - _LOG_T_RANGE[0]), abs(_LOG_T_RANGE[1] - log_t)) < 1e-3:
        logger.warning(
            "the fitted temperature %.4g is at the edge of the search range: the validation "
            "patches are (almost) perfectly separated, so the NLL has no interior minimum",
            fitted,
        )
    return float(fitted)


def _as_margins(margins: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) or (V, N) margins -> (V, N) float64; labels -> (N,) 0/1 int64."""
    margins = np.asarray(margins, dtype=np.float64)
    labels = np.asarray(labels).astype(np.int64).ravel()
    if margins.ndim == 1:
        margins = margins[None]
    if margins.ndim != 2 or margins.shape[1] != labels.size:
        raise InvalidInputError(
            f"margins of shape {margins.shape} do not match {labels.size} labels; "
            "give (N,) margins or (V, N) margins of V augmented views"
        )
    if labels.size == 0:
        raise InvalidInputError("no validation samples to fit on")
    if not np.isin(labels, (0, 1)).all():
        raise InvalidInputError("Platt scaling needs 0/1 labels")
    if not np.isfinite(margins).all():
        raise InvalidInputError("margins contain NaN or infinity; the model output is broken")
    return margins, labels


def _log_sigmoid(values: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) without overflow: −softplus(−x)."""
    return -np.logaddexp(0.0, -values)


def platt_nll(margins: np.ndarray, labels: np.ndarray, temperature: float, bias: float) -> float:
    """Mean NLL of 0/1 ``labels`` under ``P(IDC) = mean_v sigmoid(m_v / T + b)``.

    Args:
        margins: (N,) IDC margins, or (V, N) margins of V views whose
            probabilities are averaged (as TTA serving does).
        labels: (N,) 0/1 labels.
        temperature: T > 0.
        bias: b, added to the scaled margin.

    Returns:
        The mean NLL in nats.
    """
    margins, labels = _as_margins(margins, labels)
    scaled = margins / temperature + bias  # (V, N)
    views = margins.shape[0]
    log_idc = _logsumexp(_log_sigmoid(scaled), axis=0) - np.log(views)  # (N,)
    log_no_idc = _logsumexp(_log_sigmoid(-scaled), axis=0) - np.log(views)  # (N,)
    return float(-np.mean(np.where(labels == 1, log_idc, log_no_idc)))


def _golden_minimum(
    loss: Callable[[float], float], low: float, high: float, tolerance: float
) -> tuple[float, float]:
    """Golden-section search of a unimodal ``loss`` on [low, high] -> (x, loss(x))."""
    inner_low = high - _GOLDEN * (high - low)
    inner_high = low + _GOLDEN * (high - low)
    loss_low, loss_high = loss(inner_low), loss(inner_high)
    while high - low > tolerance:
        if loss_low <= loss_high:
            high, inner_high, loss_high = inner_high, inner_low, loss_low
            inner_low = high - _GOLDEN * (high - low)
            loss_low = loss(inner_low)
        else:
            low, inner_low, loss_low = inner_low, inner_high, loss_high
            inner_high = low + _GOLDEN * (high - low)
            loss_high = loss(inner_high)
    middle = (low + high) / 2
    return middle, loss(middle)


def fit_platt(
    margins: np.ndarray, labels: np.ndarray, tolerance: float = 1e-5
) -> tuple[float, float]:
    """Temperature T and bias b minimising the validation NLL of ``sigmoid(m / T + b)``.

    For one view this is a logistic regression on the margin, whose NLL is
    jointly convex in (1/T, b); the best T for each b is found by an inner
    golden-section search over log T and the outer search runs over b (a
    partial minimum of a convex function is convex).

    Args:
        margins: (N,) validation IDC margins ``z1 - z0``, or (V, N) margins of
            V augmented views whose probabilities are averaged.
        labels: (N,) 0/1 labels.
        tolerance: Bracket width at which both searches stop.

    Returns:
        ``(temperature, bias)``; write them as ``temperature`` and
        ``logit_bias`` into ``model.json``. A value at the edge of
        :data:`TEMPERATURE_RANGE` or :data:`BIAS_RANGE` means the fit has no
        interior optimum (perfectly separated or one-class validation data).

    Raises:
        InvalidInputError: On mismatched shapes, an empty set, non-0/1 labels
            or non-finite margins.
    """
    margins, labels = _as_margins(margins, labels)
    best_log_t: dict[float, float] = {}

    def profile(bias: float) -> float:
        log_t, value = _golden_minimum(
            lambda log_t: platt_nll(margins, labels, math.exp(log_t), bias),
            *_LOG_T_RANGE,
            tolerance,
        )
        best_log_t[bias] = log_t
        return value

    bias, _ = _golden_minimum(profile, *BIAS_RANGE, tolerance)
    profile(bias)
    return float(math.exp(best_log_t[bias])), float(bias)


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    ridge: float = 1e-6,
    max_iterations: int = 100,
) -> tuple[np.ndarray, float]:
    """Weights and bias of a logistic regression, by Newton's method.

    Used for the slide context (:mod:`bcd.neighbourhood`): a handful of
    features, thousands of validation patches. A tiny ridge on the weights
    (not the bias) keeps the Newton steps defined when features are nearly
    collinear; the NLL is convex, so the optimum found is the optimum.

    Args:
        features: (N, K) finite features.
        labels: (N,) 0/1 labels.
        ridge: L2 penalty per patch on the weights.
        max_iterations: Newton steps at most.

    Returns:
        ``(weights (K,), bias)``.

    Raises:
        InvalidInputError: Mismatched shapes, one class, non-finite features,
            or data separated perfectly (no finite optimum).
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.float64).ravel()
    if x.ndim != 2 or x.shape[0] != y.size or y.size == 0:
        raise InvalidInputError(f"features {x.shape} do not match {y.size} labels")
    if not np.isfinite(x).all():
        raise InvalidInputError("the features hold NaN or infinite values")
    if not np.isin(y, (0.0, 1.0)).all() or y.min() == y.max():
        raise InvalidInputError("logistic regression needs 0/1 labels of both classes")
    design = np.c_[x, np.ones(y.size)]
    penalty = np.full(design.shape[1], ridge * y.size)
    penalty[-1] = 0.0
    beta = np.zeros(design.shape[1])
    beta[-1] = math.log(y.mean() / (1 - y.mean()))
    for _ in range(max_iterations):
        p = sigmoid(design @ beta)
        gradient = design.T @ (p - y) + penalty * beta
        hessian = (design * (p * (1 - p))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    separated = bool(np.all((design @ beta > 0) == (y == 1)))
    if separated or not np.isfinite(beta).all() or np.abs(beta).max() > 1e4:
        raise InvalidInputError(
            "the validation patches are separated perfectly, so the context fit has no "
            "optimum; fit it on a larger or harder validation set"
        )
    return beta[:-1].copy(), float(beta[-1])


def bac_optimal_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The threshold on P(IDC) that maximises balanced accuracy.

    Every cut between two neighbouring distinct scores is a candidate (a patch
    is called IDC when its score is ``>= threshold``); the threshold sits
    halfway between the two scores, so it does not hug the validation patches.
    Among equally good cuts the one closest to 0.5 wins, so a flat optimum
    does not drift to an extreme.

    Args:
        labels: (N,) 0/1 ground truth of the validation patches.
        scores: (N,) their predicted P(IDC).

    Returns:
        ``(threshold, balanced_accuracy)`` at that threshold.

    Raises:
        InvalidInputError: When the patches do not hold both classes.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_pos = int((labels == 1).sum())
    n_neg = int((labels == 0).sum())
    if labels.size != scores.size:
        raise InvalidInputError(f"{labels.size} labels but {scores.size} scores")
    if n_pos == 0 or n_neg == 0:
        raise InvalidInputError(
            "the validation patches hold only one class; a BAC-optimal threshold needs both"
        )
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    positive = labels[order] == 1
    last_of_group = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]
    true_pos = np.cumsum(positive)[last_of_group]
    false_pos = np.cumsum(~positive)[last_of_group]
    distinct = sorted_scores[last_of_group]  # descending
    bac = (true_pos / n_pos + 1 - false_pos / n_neg) / 2
    # Cut k calls the groups 0..k IDC: halfway down to the next distinct score.
    below = np.r_[distinct[1:], distinct[-1]]  # the last cut calls every patch IDC
    candidates = (distinct + below) / 2
    # Calling nothing IDC (a threshold above every score) is a candidate too.
    candidates = np.r_[np.nextafter(distinct[0], np.inf), candidates]
    bac = np.r_[0.5, bac]
    best = np.flatnonzero(np.isclose(bac, bac.max(), rtol=0, atol=1e-12))
    choice = best[np.argmin(np.abs(candidates[best] - 0.5))]
    return float(candidates[choice]), float(bac[choice])


def calibration_curve(
    labels: np.ndarray, scores: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean predicted P(IDC) and observed IDC fraction per equal-width bin.

    Args:
        labels: (N,) 0/1 ground truth.
        scores: (N,) predicted P(IDC).
        n_bins: Number of bins over [0, 1] (the same binning as the ECE).

    Returns:
        ``(mean_score, fraction_idc, count)``, each (n_bins,); empty bins hold NaN.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    bins = calibration_bins(scores, n_bins)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_score = np.bincount(bins, scores, minlength=n_bins) / count
        fraction = np.bincount(bins, labels, minlength=n_bins) / count
    return mean_score, fraction, count
