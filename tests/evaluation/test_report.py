"""Report files: JSON, Markdown with the published references, PNG plots, predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from bcd.errors import InvalidInputError
from bcd.evaluation import (
    PLOT_FILES,
    REFERENCE_RESULTS,
    EvaluationResult,
    bootstrap_metrics,
    per_patient_results,
    render_markdown,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _result(n_patients: int = 6, both_classes: bool = True) -> EvaluationResult:
    rng = np.random.default_rng(0)
    patients = np.repeat([f"{1000 + i}" for i in range(n_patients)], 30)
    labels = rng.integers(0, 2, patients.size) if both_classes else np.zeros(patients.size, int)
    scores = np.clip(rng.normal(0.3 + 0.4 * labels, 0.2), 0, 1)
    threshold = 0.45
    return EvaluationResult(
        model={"name": "demo", "model_dir": "/models/demo", "algorithm": "cnn"},
        data={
            "source": "dataset",
            "dataset": "syn",
            "split": "test",
            "description": "dataset 'syn', split 'test'",
            "fingerprint": "sha256:abc",
        },
        labels=labels,
        scores=scores,
        patient_ids=patients,
        threshold=threshold,
        threshold_source="BAC-optimal on the validation data",
        temperature=1.3,
        metrics=bootstrap_metrics(labels, scores, patients, threshold, n_replicates=100, seed=1),
        per_patient=per_patient_results(labels, scores, patients, threshold),
        bootstrap={
            "replicates": 100,
            "seed": 1,
            "confidence": 0.95,
            "unit": "patient",
            "method": "percentile",
        },
        validation={
            "description": "dataset 'syn', split 'validation'",
            "split": "validation",
            "patches": 90,
            "patients": 3,
            "bac_optimal_threshold": threshold,
            "bac_at_optimum": 0.81,
            "fitted_temperature": 1.3,
            "previous_temperature": 1.0,
            "shared_patients": 0,
        },
        xs=np.arange(patients.size),
        ys=np.arange(patients.size) * 2,
        created="2026-01-01T00:00:00+00:00",
    )


def test_report_files_are_written(tmp_path: Path) -> None:
    result = _result()
    markdown = write_report(result, tmp_path / "report")
    folder = markdown.parent
    for file_name in PLOT_FILES.values():
        data = (folder / file_name).read_bytes()
        assert data.startswith(PNG_MAGIC), file_name
        assert len(data) > 5000, file_name
    assert not list(folder.glob(".*partial"))  # nothing half-written is left behind

    summary = json.loads((folder / "report.json").read_text())
    assert summary["threshold"] == {"value": 0.45, "source": "BAC-optimal on the validation data"}
    assert summary["data"]["patients"] == 6
    assert summary["data"]["patches"] == 180
    assert summary["bootstrap"]["unit"] == "patient"
    bac = summary["metrics"]["balanced_accuracy"]
    assert bac["value"] == pytest.approx(result.metrics["balanced_accuracy"].value)
    assert bac["ci_low"] <= bac["value"] <= bac["ci_high"]
    assert "equal-width" in summary["metric_definitions"]["ece_binning"]
    assert len(summary["per_patient"]) == 6
    assert summary["plots"] == PLOT_FILES

    with open(folder / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 180
    assert rows[3]["x"] == "3" and rows[3]["y"] == "6"
    called = [int(row["predicted_idc"]) for row in rows]
    assert called == (result.scores >= 0.45).astype(int).tolist()


def test_markdown_prints_published_results_beside_ours() -> None:
    result = _result()
    text = render_markdown(result)
    for reference in REFERENCE_RESULTS:
        assert reference["name"] in text
    assert "| 0.718 | 0.842 |" in text  # Cruz-Roa et al. 2014
    assert "| 0.765 | 0.847 |" in text  # Janowczyk & Madabhushi 2016
    assert "| 0.890 |" in text  # Romero et al. 2019
    assert "| 0.000 | 0.500 | 0.710 |" in text  # the all-negative baseline
    ours = result.metrics["balanced_accuracy"]
    assert f"**{ours.value:.3f}**" in text
    assert f"{ours.low:.3f} – {ours.high:.3f}" in text
    assert "bootstrap over patients" in text
    assert "0.4500" in text  # the threshold used
    assert "![ROC curve]" not in text  # plots are listed only once drawn


def test_markdown_per_patient_table_has_every_patient() -> None:
    result = _result()
    text = render_markdown(result)
    for row in result.per_patient:
        assert f"| {row.patient_id} | {row.patches} | {row.idc_patches} |" in text


def test_single_class_data_skips_roc_and_pr_plots(tmp_path: Path) -> None:
    result = _result(both_classes=False)
    write_report(result, tmp_path)
    assert not (tmp_path / PLOT_FILES["roc"]).exists()
    assert (tmp_path / PLOT_FILES["calibration"]).exists()
    summary = json.loads((tmp_path / "report.json").read_text())
    assert summary["metrics"]["roc_auc"]["value"] is None  # undefined, not 0


def test_report_without_plots_and_bad_folder(tmp_path: Path) -> None:
    write_report(_result(), tmp_path / "plain", plots=False)
    assert not list((tmp_path / "plain").glob("*.png"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="not a folder"):
        write_report(_result(), tmp_path / "file", plots=False)


def test_per_patient_results_hand_case() -> None:
    labels = np.array([1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.2, 0.6, 0.1, 0.3, 0.4])
    patients = np.array(["a", "a", "a", "b", "b", "b"])
    rows = {row.patient_id: row for row in per_patient_results(labels, scores, patients, 0.5)}
    assert rows["a"].sensitivity == pytest.approx(0.5)
    assert rows["a"].specificity == pytest.approx(0.0)
    assert rows["a"].balanced_accuracy == pytest.approx(0.25)
    assert rows["a"].predicted_idc == 2
    assert rows["b"].sensitivity is None  # no IDC patch
    assert rows["b"].balanced_accuracy is None
    assert rows["b"].accuracy == pytest.approx(1.0)
    assert rows["b"].mean_probability == pytest.approx(0.8 / 3)


def test_the_median_per_patient_bac_counts_only_patients_with_both_classes() -> None:
    from bcd.evaluation._patients import patient_bac_summary

    labels = np.array([0, 1, 0, 1] * 3 + [0, 0, 0])
    patients = np.repeat(["a", "b", "c", "d"], [4, 4, 4, 3])
    # a: perfect; b: calls everything IDC (BAC 0.5); c: one IDC missed (0.75); d: no IDC.
    scores = np.array([0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 0.9, 0.9, 0.9], dtype=float)
    rows = per_patient_results(labels, scores, patients, 0.5)
    summary = patient_bac_summary(rows, replicates=200, seed=3)
    assert summary is not None
    assert summary["patients"] == 3
    assert summary["median"] == pytest.approx(0.75)
    assert 0.5 <= summary["low"] <= summary["median"] <= summary["high"] <= 1.0
    assert patient_bac_summary(rows[3:]) is None
    markdown = render_markdown(_result())
    assert "Median per-patient (per-slide) balanced accuracy over the 6 patients" in markdown
    assert json.loads(json.dumps(_result().summary()))["per_patient_bac"]["patients"] == 6
