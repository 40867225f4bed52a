"""The per-patient table: how the model does on each patient's patches."""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
