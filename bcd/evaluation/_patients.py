"""The per-patient table: how the model does on each patient's patches."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from bcd.evaluation._bootstrap import patient_indices


@dataclass(frozen=True)
class PatientResult:
    """Counts and rates of one patient's patches at the report's threshold.

    Attributes:
        patient_id: The patient.
        patches: Number of patches.
        idc_patches: Patches labelled IDC.
        predicted_idc: Patches called IDC by the model.
        sensitivity: Recall of IDC patches; ``None`` when the patient has none.
        specificity: Recall of non-IDC patches; ``None`` when the patient has none.
        balanced_accuracy: Mean of the two; ``None`` unless the patient has both classes.
        accuracy: Fraction of patches classified correctly.
        mean_probability: Mean predicted P(IDC).
    """

    patient_id: str
    patches: int
    idc_patches: int
    predicted_idc: int
    sensitivity: float | None
    specificity: float | None
    balanced_accuracy: float | None
    accuracy: float
    mean_probability: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return asdict(self)


def per_patient_results(
    labels: np.ndarray, scores: np.ndarray, patient_ids: np.ndarray, threshold: float
) -> list[PatientResult]:
    """One :class:`PatientResult` per patient, sorted by patient id.

    Args:
        labels: (N,) 0/1 ground truth.
        scores: (N,) predicted P(IDC).
        patient_ids: (N,) patient of each patch.
        threshold: A patch is called IDC when its score is ``>= threshold``.

    Returns:
        The per-patient results.
    """
    labels = np.asarray(labels).astype(np.int64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    patients, index = patient_indices(patient_ids)
    n = len(patients)
    called = (scores >= threshold).astype(np.int64)
    patches = np.bincount(index, minlength=n)
    positives = np.bincount(index, labels, minlength=n).astype(np.int64)
    predicted = np.bincount(index, called, minlength=n).astype(np.int64)
    true_pos = np.bincount(index, labels * called, minlength=n).astype(np.int64)
    true_neg = np.bincount(index, (1 - labels) * (1 - called), minlength=n).astype(np.int64)
    score_sum = np.bincount(index, scores, minlength=n)

    results = []
    for i, patient_id in enumerate(patients):
        negatives = int(patches[i] - positives[i])
        sensitivity = float(true_pos[i] / positives[i]) if positives[i] else None
        specificity = float(true_neg[i] / negatives) if negatives else None
        balanced = (
            (sensitivity + specificity) / 2
            if sensitivity is not None and specificity is not None
            else None
        )
        results.append(
            PatientResult(
                patient_id=str(patient_id),
                patches=int(patches[i]),
                idc_patches=int(positives[i]),
                predicted_idc=int(predicted[i]),
                sensitivity=sensitivity,
                specificity=specificity,
                balanced_accuracy=balanced,
                accuracy=float((true_pos[i] + true_neg[i]) / patches[i]),
                mean_probability=float(score_sum[i] / patches[i]),
            )
        )
    return results


def patient_bac_summary(
    results: list[PatientResult], replicates: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, Any] | None:
    """The median per-patient balanced accuracy over patients with both classes.

    Each patient is one slide in this dataset, so this is the median per-slide
    BAC of whole-slide analysis when the patches were scored with slide context.
    The interval resamples those patients with replacement.

    Args:
        results: :func:`per_patient_results`.
        replicates: Bootstrap replicates.
        seed: Seed of the bootstrap.
        confidence: Width of the percentile interval.

    Returns:
        ``{"patients", "median", "low", "high", "quartiles", "confidence"}``, or
        ``None`` when no patient has patches of both classes.
    """
    values = np.array(
        [row.balanced_accuracy for row in results if row.balanced_accuracy is not None],
        dtype=np.float64,
    )
    if values.size == 0:
        return None
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, values.size, size=(replicates, values.size))
    medians = np.median(values[draws], axis=1)
    tail = (1.0 - confidence) / 2
    return {
        "patients": int(values.size),
        "median": float(np.median(values)),
        "low": float(np.quantile(medians, tail)),
        "high": float(np.quantile(medians, 1.0 - tail)),
        "quartiles": [float(np.quantile(values, 0.25)), float(np.quantile(values, 0.75))],
        "confidence": confidence,
    }
