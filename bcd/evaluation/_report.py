"""The evaluation report: ``report.json``, ``report.md``, PNG plots and ``predictions.csv``.

Every file is written beside its final name and renamed into place, so an
interrupted run never leaves a half-written report that looks complete.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bcd.errors import InvalidInputError
from bcd.evaluation._bootstrap import Interval
from bcd.evaluation._metrics import ECE_BINS, METRICS, PROBABILITY_EPS
from bcd.evaluation._patients import PatientResult, patient_bac_summary

REPORT_FORMAT_VERSION = 1

#: Published patient/slide-held-out results on this dataset, and the trivial baseline.
REFERENCE_RESULTS: tuple[dict[str, Any], ...] = (
    {
        "name": "Cruz-Roa et al. 2014",
        "model": "3-layer CNN",
        "f1": 0.718,
        "balanced_accuracy": 0.842,
        "accuracy": None,
    },
    {
        "name": "Janowczyk & Madabhushi 2016",
        "model": "AlexNet-style CNN",
        "f1": 0.765,
        "balanced_accuracy": 0.847,
        "accuracy": None,
    },
    {
        "name": "Romero et al. ISBI 2019",
        "model": "Inception-style CNN, multi-level batch normalisation",
        "f1": None,
        "balanced_accuracy": 0.89,
        "accuracy": None,
    },
    {
        "name": "All-negative baseline",
        "model": "calls every patch no IDC",
        "f1": 0.0,
        "balanced_accuracy": 0.5,
        "accuracy": 0.71,
    },
)

_LOWER_IS_BETTER = {"log_loss", "brier", "ece"}


@dataclass
class EvaluationResult:
    """Everything one evaluation found; :func:`write_report` turns it into files.

    Attributes:
        model: What was evaluated (``source``, ``name``, ``model_dir``, ``algorithm``...).
        data: What it was evaluated on (``source``, ``split``, ``fingerprint``...).
        labels: (N,) 0/1 ground truth of the evaluated patches.
        scores: (N,) predicted P(IDC) after calibration.
        patient_ids: (N,) patient of each patch.
        threshold: The decision threshold the metrics use.
        threshold_source: Where it came from (``"--threshold"``, ``"validation"``, ``"default"``).
        temperature: The temperature the probabilities were computed with.
        logit_bias: The logit bias they were computed with (Platt scaling).
        metrics: Metric name -> point estimate with its patient-bootstrap interval.
        per_patient: One row per patient.
        bootstrap: Replicates, seed, confidence and method of the intervals.
        validation: The validation-split findings (BAC-optimal threshold,
            fitted calibration), or ``None`` when no validation data was used.
        tta: Whether the 8 dihedral views were averaged.
        xs: (N,) patch x coordinates, when known.
        ys: (N,) patch y coordinates, when known.
        class_names: Names of class 0 and class 1.
        created: ISO timestamp of the evaluation.
        slide_context: The slide context the scores were combined with
            (``radius``, ``weights``, ``bias``, ``decision_threshold``,
            ``source``), or ``None`` when every patch was scored alone.
    """

    model: dict[str, Any]
    data: dict[str, Any]
    labels: np.ndarray
    scores: np.ndarray
    patient_ids: np.ndarray
    threshold: float
    threshold_source: str
    temperature: float
    metrics: dict[str, Interval]
    per_patient: list[PatientResult]
    bootstrap: dict[str, Any]
    validation: dict[str, Any] | None = None
    tta: bool = False
    xs: np.ndarray | None = None
    ys: np.ndarray | None = None
    class_names: tuple[str, str] = ("no IDC", "IDC")
    created: str = ""
    plots: dict[str, str] = field(default_factory=dict)
    logit_bias: float = 0.0
    slide_context: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON document of ``report.json`` (no patch-level arrays)."""
        n_patches = int(self.labels.size)
        idc = int(np.sum(self.labels))
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "created": self.created,
            "model": self.model,
            "data": {
                **self.data,
                "patches": n_patches,
                "patients": len(self.per_patient),
                "idc_patches": idc,
                "idc_fraction": idc / n_patches if n_patches else None,
            },
            "tta": self.tta,
            "temperature": self.temperature,
            "logit_bias": self.logit_bias,
            "slide_context": self.slide_context,
            "threshold": {"value": self.threshold, "source": self.threshold_source},
            "validation": self.validation,
            "bootstrap": self.bootstrap,
            "metrics": {name: interval.as_dict() for name, interval in self.metrics.items()},
            "metric_definitions": {
                **METRICS,
                "ece_binning": f"{ECE_BINS} equal-width bins of P(IDC) over [0, 1]",
                "log_loss_clipping": PROBABILITY_EPS,
            },
            "references": list(REFERENCE_RESULTS),
            "per_patient_bac": patient_bac_summary(self.per_patient),
            "per_patient": [row.as_dict() for row in self.per_patient],
            "plots": self.plots,
        }


def _format(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _interval_text(interval: Interval) -> str:
    if math.isnan(interval.low):
        return "n/a"
    return f"{interval.low:.3f} – {interval.high:.3f}"


def _throughput(model: dict[str, Any]) -> str:
    rate = model.get("patches_per_second")
    if not rate:
        return ""
    return f"; scored {rate:,.0f} patches/s through ONNX Runtime on this machine"


def _context_lines(context: dict[str, Any] | None) -> list[str]:
    if context is None:
        return [
            "- **Scoring**: every patch alone, as the single-patch API scores it (no slide context)"
        ]
    radius = context["radius"]
    side = 2 * radius + 1
    weights = ", ".join(f"{weight:.3f}" for weight in context["weights"])
    return [
        f"- **Scoring**: with slide context, as whole-slide analysis scores tiles: each "
        f"patch's logit combined with the mean logits of its patient's patches in windows "
        f"up to {side} × {side} patches (radius {radius}; weights {weights}, bias "
        f"{context['bias']:.3f}; {context['source']}). These numbers describe slide "
        "heatmaps and reports, not the single-patch API"
    ]


def render_markdown(result: EvaluationResult) -> str:
    """The Markdown report.

    Args:
        result: The evaluation.

    Returns:
        The document text.
    """
    summary = result.summary()
    data, model, boot = summary["data"], summary["model"], result.bootstrap
    lines = [
        f"# Evaluation of {model.get('name') or model.get('model_dir')}",
        "",
        f"- **Data**: {data.get('description', data.get('source'))} — "
        f"{data['patients']} patients, {data['patches']} patches, "
        f"{data['idc_patches']} IDC ({_format(data['idc_fraction'], 3)})",
        f"- **Model**: `{model.get('model_dir')}` (algorithm {model.get('algorithm', '?')}), "
        f"temperature {result.temperature:g}, logit bias {result.logit_bias:g}, "
        "test-time augmentation "
        f"{'on (8 dihedral views averaged)' if result.tta else 'off'}" + _throughput(model),
        *_context_lines(result.slide_context),
        f"- **Threshold**: a patch is called IDC when P(IDC) ≥ {result.threshold:.4f} "
        f"({result.threshold_source})",
        f"- **Intervals**: {boot['confidence']:.0%} percentile bootstrap over patients "
        f"({boot['replicates']} replicates, seed {boot['seed']}): each replicate draws "
        "patients with replacement and pools their patches",
        f"- **Created**: {result.created}",
        "",
        "## Metrics",
        "",
        "| metric | value | 95% CI | meaning |",
        "|---|---:|---:|---|",
    ]
    for name, interval in result.metrics.items():
        undefined = f" ({interval.undefined} replicates undefined)" if interval.undefined else ""
        lines.append(
            f"| {name} | {_format(interval.value)} | {_interval_text(interval)}{undefined} "
            f"| {METRICS[name]} |"
        )
    lines += [
        "",
        f"ECE bins: {ECE_BINS} equal-width bins of the predicted P(IDC) over [0, 1]; "
        "ECE = Σ (bin patches / all patches) × |mean P(IDC) − IDC fraction| per bin.",
        "",
        "## Beside published results",
        "",
        "Published numbers come from their own patient-held-out splits of this dataset "
        "(the full Kaggle set); they are reference points, not a paired comparison.",
        "",
        "| model | F1 (IDC) | balanced accuracy | accuracy |",
        "|---|---:|---:|---:|",
    ]
    for reference in REFERENCE_RESULTS:
        lines.append(
            f"| {reference['name']} ({reference['model']}) | {_format(reference['f1'])} "
            f"| {_format(reference['balanced_accuracy'])} | {_format(reference['accuracy'])} |"
        )
    negatives = 1 - (data["idc_fraction"] or 0.0)
    lines.append(f"| All-negative baseline on these patches | 0.000 | 0.500 | {negatives:.3f} |")
    metrics = result.metrics
    lines.append(
        f"| **this model** | **{_format(metrics['f1'].value)}** "
        f"({_interval_text(metrics['f1'])}) | **{_format(metrics['balanced_accuracy'].value)}** "
        f"({_interval_text(metrics['balanced_accuracy'])}) "
        f"| **{_format(metrics['accuracy'].value)}** |"
    )
    lines += ["", "## Threshold and calibration", ""]
    lines.append(f"- Threshold used: {result.threshold:.4f} ({result.threshold_source}).")
    if result.validation:
        validation = result.validation
        lines.append(
            f"- BAC-optimal threshold on the validation data "
            f"({validation.get('description', validation.get('split'))}, "
            f"{validation['patients']} patients, {validation['patches']} patches): "
            f"{validation['bac_optimal_threshold']:.4f}, validation BAC "
            f"{validation['bac_at_optimum']:.4f}."
        )
        fitted_context = validation.get("slide_context")
        if fitted_context:
            lines.append(
                f"- Slide context fitted on the validation patches (logistic regression, "
                f"minimum NLL): validation NLL {fitted_context['nll_patch']:.4f} patch alone, "
                f"{fitted_context['nll_context']:.4f} with context; BAC-optimal threshold on "
                f"P_context {fitted_context['decision_threshold']:.4f}, validation BAC "
                f"{fitted_context['bac_at_optimum']:.4f}."
            )
        if validation.get("fitted_temperature") is not None:
            lines.append(
                f"- Calibration fitted on the validation margins (Platt scaling, minimum "
                f"NLL): temperature {validation['fitted_temperature']:.4f} (was "
                f"{validation['previous_temperature']:g}), logit bias "
                f"{validation.get('fitted_logit_bias') or 0:.4f} (was "
                f"{validation.get('previous_logit_bias') or 0:g})."
            )
    else:
        lines.append("- No validation data was given, so no BAC-optimal threshold was fitted.")
    if result.plots:
        lines += ["", "## Plots", ""]
        titles = {
            "roc": "ROC curve",
            "pr": "Precision-recall curve",
            "calibration": "Calibration curve",
            "confusion": "Confusion matrix",
            "per_patient": "Per-patient balanced accuracy",
        }
        for name, file_name in result.plots.items():
            lines += [f"![{titles.get(name, name)}]({file_name})", ""]
    lines += ["", "## Per-patient results", ""]
    patients = patient_bac_summary(result.per_patient)
    if patients is not None:
        low, high = patients["quartiles"]
        lines += [
            f"Median per-patient (per-slide) balanced accuracy over the {patients['patients']} "
            f"patients with patches of both classes: **{patients['median']:.3f}** "
            f"({patients['confidence']:.0%} bootstrap interval {patients['low']:.3f} – "
            f"{patients['high']:.3f}; quartiles {low:.3f} – {high:.3f}).",
            "",
        ]
    lines += [
        "| patient | patches | IDC | called IDC | sensitivity | specificity | BAC | accuracy "
        "| mean P(IDC) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result.per_patient:
        lines.append(
            f"| {row.patient_id} | {row.patches} | {row.idc_patches} | {row.predicted_idc} "
            f"| {_format(row.sensitivity)} | {_format(row.specificity)} "
            f"| {_format(row.balanced_accuracy)} | {_format(row.accuracy)} "
            f"| {_format(row.mean_probability)} |"
        )
    return "\n".join(lines) + "\n"


def _predictions_csv(result: EvaluationResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["patient_id", "x", "y", "label", "probability_idc", "predicted_idc"])
    n = result.labels.size
    xs = result.xs if result.xs is not None else np.full(n, -1)
    ys = result.ys if result.ys is not None else np.full(n, -1)
    for i in range(n):
        writer.writerow(
            [
                result.patient_ids[i],
                int(xs[i]),
                int(ys[i]),
                int(result.labels[i]),
                f"{result.scores[i]:.6f}",
                int(result.scores[i] >= result.threshold),
            ]
        )
    return buffer.getvalue()


def _write_text(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def write_report(result: EvaluationResult, out_dir: Path | str, plots: bool = True) -> Path:
    """Write the report files into ``out_dir`` (created when missing).

    Files: ``report.json``, ``report.md``, ``predictions.csv`` (one row per
    patch) and, with ``plots``, the PNGs of :data:`bcd.evaluation.PLOT_FILES`.

    Args:
        result: The evaluation.
        out_dir: The report folder.
        plots: Whether to draw the PNG plots (needs matplotlib).

    Returns:
        The path of ``report.md``.

    Raises:
        InvalidInputError: ``out_dir`` exists and is not a folder.
        DependencyMissingError: ``plots`` is on and matplotlib is missing.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"report folder {out} exists and is not a folder; pick another")
    out.mkdir(parents=True, exist_ok=True)
    if plots:
        from bcd.evaluation._plots import write_plots

        result.plots = write_plots(result, out)
    _write_text(out / "predictions.csv", _predictions_csv(result))
    _write_text(out / "report.json", json.dumps(result.summary(), indent=2, allow_nan=False) + "\n")
    markdown = out / "report.md"
    _write_text(markdown, render_markdown(result))
    return markdown
