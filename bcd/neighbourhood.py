"""Slide context: a tile's score combined with its neighbours' on the slide grid.

Labels in the IDC data were drawn as regions over each slide, and the
networks' errors cluster where a single patch looks unlike its surroundings.
Combining each tile's calibrated IDC logit with the mean logits of the tissue
tiles around it (windows of ``(2r + 1) × (2r + 1)`` tiles, r = 1…R) removes
much of that noise::

    P_context(IDC) = sigmoid(w_0 · logit P(IDC) + Σ_r w_r · mean_r + b)

where ``mean_r`` is the mean logit over the tissue tiles of the window of
radius ``r`` (the tile itself included). The R + 2 numbers ``w`` and ``b`` and
the decision threshold on ``P_context`` are fitted on validation patients by
``bcd evaluate --calibrate --context-radius R`` (logistic regression, so
``P_context`` is calibrated) and stored under ``slide_context`` in
``model.json``. Whole-slide analysis applies them when the model has them; the
single-patch API never does (one patch has no neighbours). Only numpy is
needed, so the serving install can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bcd.errors import InvalidInputError

#: Largest radius accepted (an 11 × 11 window, 2.2 mm at the IDC patches' 4 µm/px).
MAX_RADIUS = 5
#: Grid step of the dataset's patch coordinates, in pixels.
PATCH_STEP = 50
#: Probabilities are clipped to this distance from 0 and 1 before the logit.
_EPSILON = 1e-6


@dataclass(frozen=True)
class SlideContext:
    """How a model's tile scores are combined with their neighbours'.

    Attributes:
        radius: The largest window radius R, in grid steps (1 = the 3 × 3 window).
        weights: R + 1 weights: the tile's own logit, then the window means for
            r = 1…R.
        bias: Added to the weighted sum.
        decision_threshold: A tile counts as IDC when ``P_context >= this``.
    """

    radius: int
    weights: tuple[float, ...]
    bias: float = 0.0
    decision_threshold: float = 0.5

    def to_json(self) -> dict[str, Any]:
        """The fields as stored in ``model.json`` (without fitting details)."""
        return {
            "radius": self.radius,
            "weights": list(self.weights),
            "bias": self.bias,
            "decision_threshold": self.decision_threshold,
        }

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """``P_context`` from features whose last axis holds the R + 1 logits."""
        return sigmoid(
            np.asarray(features, dtype=np.float64) @ np.asarray(self.weights) + self.bias
        )


def check_radius(radius: Any) -> int:
    """``radius`` if it is a whole number of grid steps from 0 to :data:`MAX_RADIUS`.

    Raises:
        InvalidInputError: Otherwise.
    """
    if isinstance(radius, bool) or not isinstance(radius, int | np.integer):
        raise InvalidInputError(f"context radius must be a whole number of tiles, not {radius!r}")
    if not 0 <= radius <= MAX_RADIUS:
        raise InvalidInputError(f"context radius {radius} must be between 0 and {MAX_RADIUS}")
    return int(radius)


def parse_slide_context(value: Any) -> SlideContext | None:
    """The ``slide_context`` object of a ``model.json`` (``None`` when absent).

    Raises:
        InvalidInputError: A field is missing or out of range.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInputError("model.json slide_context must be an object")

    def number(found: Any, key: str) -> float:
        if isinstance(found, bool) or not isinstance(found, int | float) or not np.isfinite(found):
            raise InvalidInputError(f"model.json slide_context.{key} must be a number")
        if not abs(found) < 1e6:
            raise InvalidInputError(f"model.json slide_context.{key} is out of range")
        return float(found)

    try:
        radius = check_radius(value.get("radius"))
    except InvalidInputError as error:
        raise InvalidInputError(f"model.json slide_context: {error}") from None
    if radius == 0:
        raise InvalidInputError("model.json slide_context.radius must be at least 1")
    weights = value.get("weights")
    if not isinstance(weights, list) or len(weights) != radius + 1:
        raise InvalidInputError(
            f"model.json slide_context.weights must list {radius + 1} numbers (radius + 1)"
        )
    threshold = number(value.get("decision_threshold"), "decision_threshold")
    if not 0.0 < threshold < 1.0:
        raise InvalidInputError("model.json slide_context.decision_threshold must be in (0, 1)")
    return SlideContext(
        radius,
        tuple(number(weight, "weights") for weight in weights),
        number(value.get("bias"), "bias"),
        threshold,
    )


def logits(probabilities: np.ndarray) -> np.ndarray:
    """``log(p / (1 - p))`` in float64, with ``p`` clipped away from 0 and 1 (NaN stays NaN)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), _EPSILON, 1 - _EPSILON)
    return np.log(p) - np.log1p(-p)


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow for large arguments (NaN stays NaN)."""
    values = np.asarray(values, dtype=np.float64)
    exp_neg = np.exp(-np.abs(values))
    return np.where(values >= 0, 1 / (1 + exp_neg), exp_neg / (1 + exp_neg))


def _window_sums(grid: np.ndarray, radius: int) -> np.ndarray:
    """Sum of ``grid`` over the ``(2r + 1)²`` window around every cell (zero outside)."""
    padded = np.pad(grid, ((radius + 1, radius), (radius + 1, radius)))
    table = padded.cumsum(axis=0).cumsum(axis=1)
    size = 2 * radius + 1
    return table[size:, size:] - table[:-size, size:] - table[size:, :-size] + table[:-size, :-size]


def grid_mean(values: np.ndarray, radius: int) -> np.ndarray:
    """Each finite cell's mean over the finite cells within ``radius`` steps.

    Args:
        values: ``(rows, cols)`` map; NaN marks cells that are not tissue.
        radius: Window half-width in cells (0 returns a copy).

    Returns:
        float64 map of the same shape, NaN where ``values`` is NaN.
    """
    radius = check_radius(radius)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise InvalidInputError(f"expected a 2-D map, got shape {values.shape}")
    present = np.isfinite(values)
    if radius == 0 or not present.any():
        return np.where(present, values, np.nan)
    totals = _window_sums(np.where(present, values, 0.0), radius)
    counts = _window_sums(present.astype(np.float64), radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = totals / counts
    return np.where(present, means, np.nan)


def grid_features(probabilities: np.ndarray, radius: int) -> np.ndarray:
    """Context features of every tile of a slide's probability map.

    Args:
        probabilities: ``(rows, cols)`` calibrated P(IDC) per tile, NaN off tissue.
        radius: The largest window radius R.

    Returns:
        ``(rows, cols, R + 1)`` float64: the tile's logit, then its window means.
    """
    own = logits(probabilities)
    return np.stack([own, *(grid_mean(own, r) for r in range(1, radius + 1))], axis=-1)


def context_map(probabilities: np.ndarray, context: SlideContext) -> np.ndarray:
    """A slide's tile probabilities combined with their neighbours' (see the module).

    Args:
        probabilities: ``(rows, cols)`` calibrated P(IDC) per tile, NaN off tissue.
        context: The model's fitted context.

    Returns:
        float32 ``P_context`` map, NaN where ``probabilities`` is NaN.
    """
    combined = context.probabilities(grid_features(probabilities, context.radius))
    return combined.astype(np.float32)


def patch_features(
    probabilities: np.ndarray,
    groups: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    radius: int,
    step: int = PATCH_STEP,
) -> np.ndarray:
    """Context features of patches given by their slide coordinates.

    Patches of one group (patient, slide) are placed on a grid of ``step``
    pixels; a patch's neighbours are the patches of its group within ``r``
    grid steps, itself included. Patches sharing a cell are all counted.

    Args:
        probabilities: ``(N,)`` calibrated P(IDC).
        groups: ``(N,)`` patient or slide of each patch.
        xs: ``(N,)`` x coordinate of each patch, in pixels.
        ys: ``(N,)`` y coordinate.
        radius: The largest window radius R.
        step: Grid step in pixels.

    Returns:
        ``(N, R + 1)`` float64: each patch's logit, then its window means.

    Raises:
        InvalidInputError: Mismatched lengths or a bad radius.
    """
    radius = check_radius(radius)
    own = logits(probabilities)
    groups, xs, ys = np.asarray(groups), np.asarray(xs), np.asarray(ys)
    if not own.shape == groups.shape == xs.shape == ys.shape or own.ndim != 1:
        raise InvalidInputError("probabilities, groups, xs and ys must be 1-D and equally long")
    features = np.empty((own.size, radius + 1))
    features[:, 0] = own
    if radius == 0 or own.size == 0:
        return features
    _, inverse = np.unique(groups, return_inverse=True)
    for group in range(int(inverse.max()) + 1):
        members = np.flatnonzero(inverse == group)
        cols = np.floor_divide(xs[members], step).astype(np.int64)
        rows = np.floor_divide(ys[members], step).astype(np.int64)
        cols -= cols.min()
        rows -= rows.min()
        shape = (int(rows.max()) + 1, int(cols.max()) + 1)
        totals = np.zeros(shape)
        counts = np.zeros(shape)
        np.add.at(totals, (rows, cols), own[members])
        np.add.at(counts, (rows, cols), 1.0)
        for r in range(1, radius + 1):
            window_totals = _window_sums(totals, r)
            window_counts = _window_sums(counts, r)
            features[members, r] = window_totals[rows, cols] / window_counts[rows, cols]
    return features
