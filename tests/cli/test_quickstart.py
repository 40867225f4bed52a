"""``bcd quickstart`` walks the whole journey on a small synthetic tree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bcd.cli.main import build_app
from bcd.clients import Client
from bcd.config import Settings
from bcd.testing import make_synthetic_tree


def test_quickstart_imports_trains_and_deploys(tmp_path: Path, settings: Settings) -> None:
    tree = make_synthetic_tree(tmp_path / "tree", n_patients=8, patches_per_patient=20)
    export = tmp_path / "exported"
    result = CliRunner().invoke(
        build_app(),
        ["quickstart", str(tree), "--epochs", "1", "--endpoint", "qs", "--export", str(export)],
    )
    assert result.exit_code == 0, result.output

    client = Client(settings)
    endpoint = client.describe_endpoint(EndpointName="qs")
    assert endpoint["EndpointStatus"] == "InService"
    job = client.describe_training_job(TrainingJobName="quickstart-cnn")
    assert job["TrainingJobStatus"] == "Completed"
    assert job["HyperParameters"]["augmentation_type"] == "crop_color_transform"
    assert job["HyperParameters"]["architecture"] == "deep"
    model_json = json.loads((export / "model.json").read_text())
    assert model_json["algorithm"] == "cnn"
    # Calibrated on the validation split before it was registered, or told why not.
    if "3/5 calibrated" in result.output:
        assert 0 < model_json["decision_threshold"] < 1 and "logit_bias" in model_json
        # And the slide context for whole-slide analysis, or why not.
        if "3/5 slide context (radius 3)" in result.output:
            assert model_json["slide_context"]["radius"] == 3
        else:
            assert "3/5 slide context skipped" in result.output
    else:
        assert "3/5 calibration skipped" in result.output
    assert (export / "model.onnx").stat().st_size > 0


def test_quickstart_reuses_an_existing_dataset(tmp_path: Path, settings: Settings) -> None:
    tree = make_synthetic_tree(tmp_path / "tree", n_patients=8, patches_per_patient=20)
    runner = CliRunner()
    first = runner.invoke(build_app(), ["quickstart", str(tree), "--epochs", "1"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(
        build_app(), ["quickstart", str(tree), "--epochs", "1", "--job-name", "again"]
    )
    # The dataset is reused; the endpoint name is taken, which is a clear conflict.
    assert "reusing it" in second.output
    assert second.exit_code == 5, second.output


@pytest.mark.parametrize("bad", ["--epochs=0"])
def test_quickstart_rejects_bad_options(tmp_path: Path, bad: str) -> None:
    result = CliRunner().invoke(build_app(), ["quickstart", str(tmp_path), bad])
    assert result.exit_code == 2
