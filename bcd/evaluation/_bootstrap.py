"""Confidence intervals by bootstrapping over patients.

Patches of one patient are strongly correlated, so resampling patches would
pretend there are tens of thousands of independent observations and give
intervals far too narrow. Each replicate here draws patients with replacement
(as many as there are) and recomputes every metric on the pooled patches of
the drawn patients; a patient drawn twice counts twice. Replicates are
weightings of the same patches, so all of them are computed at once with
matrix products (see :mod:`bcd.evaluation._metrics`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from bcd.errors import InvalidInputError
from bcd.evaluation._metrics import ScoredPatches, weighted_metrics

logger = logging.getLogger(__name__)

#: Replicates computed per matrix product; bounds memory to ~CHUNK x N floats.
CHUNK = 64


@dataclass(frozen=True)
class Interval:
    """A metric's point estimate and its bootstrap interval.

    Attributes:
        value: The metric on the evaluated patches as they are.
        low: Lower bound of the interval (NaN when too few replicates are defined).
        high: Upper bound of the interval.
        undefined: Replicates in which the metric was undefined (e.g. no IDC patch drawn).
    """

    value: float
    low: float
    high: float
    undefined: int = 0

    def as_dict(self) -> dict[str, float | int | None]:
        """JSON-ready form; NaN becomes ``None``."""

        def clean(number: float) -> float | None:
            return None if np.isnan(number) else float(number)

        return {
            "value": clean(self.value),
            "ci_low": clean(self.low),
            "ci_high": clean(self.high),
            "undefined_replicates": int(self.undefined),
        }


def patient_indices(patient_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map each patch to the index of its patient.

    Args:
        patient_ids: (N,) patient id of each patch.

    Returns:
        ``(patients, index)``: the P distinct ids (sorted) and (N,) indices into them.
    """
    patients, index = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    return patients, index.ravel()


def patient_multiplicities(n_patients: int, n_replicates: int, seed: int) -> np.ndarray:
    """How often each patient is drawn in each bootstrap replicate.

    Args:
        n_patients: P, the number of distinct patients.
        n_replicates: B, the number of replicates.
        seed: Seed of the generator; the same seed gives the same replicates.

    Returns:
        (B, P) float counts; every row sums to P.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_patients, size=(n_replicates, n_patients))
    counts = np.zeros((n_replicates, n_patients))
    np.add.at(counts, (np.arange(n_replicates)[:, None], draws), 1.0)
    return counts


def bootstrap_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    patient_ids: np.ndarray,
    threshold: float,
    n_replicates: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Every metric with its patient-bootstrap percentile interval.

    Args:
        labels: (N,) 0/1 ground truth, 1 = IDC.
        scores: (N,) predicted P(IDC).
        patient_ids: (N,) patient of each patch.
        threshold: Decision threshold on P(IDC).
        n_replicates: Bootstrap replicates B (0 gives point estimates only).
        seed: Seed of the resampling.
        confidence: Coverage of the interval (0.95 gives the 2.5th-97.5th percentiles).

    Returns:
        Metric name -> :class:`Interval`, in report order.

    Raises:
        InvalidInputError: On empty or mismatched inputs, or bad settings.
    """
    labels = np.asarray(labels).ravel()
    patient_ids = np.asarray(patient_ids).ravel()
    if labels.size == 0:
        raise InvalidInputError("there are no patches to evaluate; check the dataset or folder")
    if patient_ids.shape != labels.shape:
        raise InvalidInputError(
            f"{patient_ids.size} patient ids for {labels.size} patches; give one id per patch"
        )
    if n_replicates < 0:
        raise InvalidInputError(f"bootstrap replicates must be >= 0, got {n_replicates}")
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")

    _, patient_of_patch = patient_indices(patient_ids)
    grouped = ScoredPatches(labels, scores, patient_of_patch)
    n_patients = grouped.n_groups
    point = weighted_metrics(grouped, np.ones((1, n_patients)), threshold)
    if n_patients < 2 and n_replicates:
        logger.warning("only one patient: bootstrap intervals over patients are degenerate")

    multiplicities = patient_multiplicities(n_patients, n_replicates, seed)
    replicates: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for start in range(0, n_replicates, CHUNK):
        chunk = multiplicities[start : start + CHUNK]  # (chunk, P)
        for name, values in weighted_metrics(grouped, chunk, threshold).items():
            replicates[name].append(values)

    tail = 100 * (1 - confidence) / 2
    intervals: dict[str, Interval] = {}
    for name, value in point.items():
        values = np.concatenate(replicates[name]) if n_replicates else np.empty(0)
        defined = values[~np.isnan(values)]
        if defined.size:
            low, high = np.percentile(defined, [tail, 100 - tail])
        else:
            low = high = np.nan
        intervals[name] = Interval(
            float(value[0]), float(low), float(high), int(values.size - defined.size)
        )
    return intervals
