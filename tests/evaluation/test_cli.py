"""``bcd evaluate`` on the tiny model with synthetic and real data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bcd import config
from bcd.cli.main import main
from bcd.config import Settings


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture
def synthetic_home(synthetic_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Point the CLI at the home holding dataset ``syn``."""
    monkeypatch.setenv("BCD_HOME", str(synthetic_settings.home))
    config.get_settings.cache_clear()
    return synthetic_settings


def test_evaluate_dataset_split_writes_the_report(
    tiny_model: Path, synthetic_home: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "report"
    code = _run(
        [
            "evaluate",
            str(tiny_model),
            "--dataset",
            "syn",
            "--split",
            "test",
            "--out",
            str(out),
            "--bootstrap",
            "50",
            "--seed",
            "3",
            "--no-plots",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    summary = json.loads((out / "report.json").read_text())
    # The dataset has a validation split, so the threshold was fitted there.
    assert summary["validation"]["split"] == "validation"
    assert summary["threshold"]["source"] == "BAC-optimal on the validation data"
    assert summary["bootstrap"] == {
        "replicates": 50,
        "seed": 3,
        "confidence": 0.95,
        "unit": "patient",
        "method": "percentile",
    }
    assert (out / "report.md").is_file() and (out / "predictions.csv").is_file()
    assert "balanced_accuracy" in printed
    assert "bootstrap over patients" in printed


def test_evaluate_folder_with_plots_and_explicit_threshold(
    tiny_model: Path, real_folders: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "holdout"
    evaluated, validation = real_folders
    code = _run(
        [
            "evaluate",
            str(tiny_model),
            "--data",
            str(evaluated),
            "--validation-data",
            str(validation),
            "--threshold",
            "0.4",
            "--out",
            str(out),
            "--bootstrap",
            "100",
        ]
    )
    assert code == 0
    summary = json.loads((out / "report.json").read_text())
    assert summary["threshold"] == {"value": 0.4, "source": "--threshold"}
    assert summary["data"]["source"] == "folder"
    assert summary["data"]["patients"] == 6
    assert summary["validation"]["bac_optimal_threshold"] != 0.4
    for name in ("roc.png", "pr.png", "calibration.png", "confusion.png", "per_patient_bac.png"):
        assert (out / name).stat().st_size > 0
    # The tiny model sees colour only, yet separates real IDC clearly better than chance.
    assert summary["metrics"]["roc_auc"]["value"] > 0.7


def test_calibrate_from_the_cli(
    tiny_model: Path,
    real_folders: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    evaluated, validation = real_folders
    code = _run(
        [
            "evaluate",
            str(tiny_model),
            "--data",
            str(evaluated),
            "--validation-data",
            str(validation),
            "--calibrate",
            "--out",
            str(tmp_path / "r"),
            "--bootstrap",
            "0",
            "--no-plots",
        ]
    )
    assert code == 0
    assert "written into model.json" in capsys.readouterr().out
    assert json.loads((tiny_model / "model.json").read_text())["temperature"] != 1.0


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--dataset", "nope"], 4, "nope"),
        (
            ["--dataset", "syn", "--split", "validation", "--validation-split", "validation"],
            2,
            "overstates",
        ),
        ([], 2, "say what to evaluate"),
        (["--dataset", "syn", "--no-validation", "--validation-split", "train"], 2, "contradicts"),
    ],
    ids=["unknown-dataset", "validate-on-evaluated-split", "no-data", "contradiction"],
)
def test_bad_input_exits_with_a_message_not_a_traceback(
    tiny_model: Path,
    synthetic_home: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    argv: list[str],
    code: int,
    message: str,
) -> None:
    exit_code = _run(["evaluate", str(tiny_model), "--out", str(tmp_path / "r"), *argv])
    captured = capsys.readouterr()
    assert exit_code == code
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_unknown_model_exits_not_found(
    synthetic_home: Settings, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    exit_code = _run(["evaluate", "ghost", "--dataset", "syn", "--out", str(tmp_path)])
    assert exit_code == 4
    assert "bcd models list" in capsys.readouterr().err


def test_evaluate_with_slide_context_says_what_it_measures(
    tiny_model: Path, real_folders: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    evaluated, validation = real_folders
    out = tmp_path / "report"
    argv = ["evaluate", str(tiny_model), "--data", str(evaluated), "--out", str(out)]
    code = _run([*argv, "--validation-data", str(validation), "--context-radius", "2",
                 "--bootstrap", "20", "--no-plots"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "slide context: radius 2" in " ".join(printed.split())
    summary = json.loads((out / "report.json").read_text())
    assert summary["slide_context"]["radius"] == 2
    assert "with slide context" in (out / "report.md").read_text()
    # Without validation data the model must already hold a context of that radius.
    assert _run([*argv, "--context-radius", "2", "--no-plots"]) != 0
    assert "no slide context of radius 2" in " ".join(capsys.readouterr().err.split())
    assert _run([*argv, "--context-radius", "9"]) != 0
