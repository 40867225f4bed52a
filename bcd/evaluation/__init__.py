"""Honest patient-level evaluation: metrics with patient-bootstrap intervals, plots, reports.

- :func:`evaluate` — score a model folder, registered model or endpoint on a
  dataset split or a dataset-layout folder through the serving runtime.
- :func:`bootstrap_metrics` — balanced accuracy, F1, sensitivity, specificity,
  precision, accuracy, ROC AUC, PR AUC, log loss, Brier score and ECE, each
  with a confidence interval from resampling *patients* (never patches).
- :func:`fit_temperature`, :func:`fit_platt` and :func:`bac_optimal_threshold` — calibration and
  threshold choice, fitted on validation data only; :func:`fit_logistic` fits the
  slide context (:mod:`bcd.neighbourhood`).
- :func:`write_report` — ``report.json``, ``report.md``, PNG plots and
  ``predictions.csv``, with published results on this dataset beside ours.
"""

from __future__ import annotations

from bcd.evaluation._bootstrap import Interval, bootstrap_metrics, patient_multiplicities
from bcd.evaluation._calibration import (
    bac_optimal_threshold,
    calibration_curve,
    fit_logistic,
    fit_platt,
    fit_temperature,
    platt_nll,
    softmax,
    temperature_nll,
)
from bcd.evaluation._evaluate import PatchSet, dataset_patches, evaluate, folder_patches
from bcd.evaluation._inference import probabilities_from_margins
from bcd.evaluation._metrics import ECE_BINS, METRICS, point_metrics
from bcd.evaluation._patients import PatientResult, per_patient_results
from bcd.evaluation._plots import PLOT_FILES
from bcd.evaluation._report import (
    REFERENCE_RESULTS,
    EvaluationResult,
    render_markdown,
    write_report,
)

__all__ = [
    "ECE_BINS",
    "METRICS",
    "PLOT_FILES",
    "REFERENCE_RESULTS",
    "EvaluationResult",
    "Interval",
    "PatchSet",
    "PatientResult",
    "bac_optimal_threshold",
    "bootstrap_metrics",
    "calibration_curve",
    "dataset_patches",
    "evaluate",
    "fit_logistic",
    "fit_platt",
    "fit_temperature",
    "folder_patches",
    "patient_multiplicities",
    "per_patient_results",
    "platt_nll",
    "point_metrics",
    "probabilities_from_margins",
    "render_markdown",
    "softmax",
    "temperature_nll",
    "write_report",
]
