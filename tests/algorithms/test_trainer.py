"""The built-in trainer under the training job contract, run in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bcd.algorithms.checkpoints import list_checkpoints, load_checkpoint
from bcd.algorithms.metrics import METRIC_NAMES
from bcd.algorithms.train import main

FAST = ["--mini_batch_size", "16", "--seed", "1"]


def _metric_epochs(output: str) -> dict[int, set[str]]:
    epochs: dict[int, set[str]] = {}
    for line in output.splitlines():
        if line.startswith("#metric epoch="):
            epoch_part, metric = line.split()[1:3]
            epochs.setdefault(int(epoch_part.split("=")[1]), set()).add(metric.split("=")[0])
    return epochs


def test_resume_continues_from_the_newest_checkpoint(
    contract: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["--algorithm", "cnn", "--epochs", "1", *FAST]) == 0
    first = capsys.readouterr().out
    assert set(_metric_epochs(first)) == {1}
    assert [p.name for p in list_checkpoints(contract / "checkpoints")] == [
        "checkpoint-epoch0001.pt"
    ]

    caplog.set_level("INFO")
    assert main(["--algorithm", "cnn", "--epochs", "3", *FAST]) == 0
    resumed = _metric_epochs(capsys.readouterr().out)
    assert sorted(resumed) == [2, 3] and all(
        set(METRIC_NAMES) <= names for names in resumed.values()
    )
    assert "resumed from checkpoint-epoch0001.pt after 1 completed epochs" in caplog.text
    description = json.loads((contract / "model" / "model.json").read_text())
    assert description["training"]["epochs_completed"] == 3
    history = json.loads((contract / "output" / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2, 3]
    state = load_checkpoint(list_checkpoints(contract / "checkpoints")[-1])
    assert state["epoch"] == 3 and state["hyperparameters"]["epochs"] == 3
    assert state["normalization"]["mean"] == description["input"]["mean"]


def test_corrupt_checkpoint_fails_naming_the_file(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (contract / "checkpoints").mkdir()
    bad = contract / "checkpoints" / "checkpoint-epoch0004.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["--algorithm", "cnn", "--epochs", "5", *FAST]) == 2
    error = capsys.readouterr().err
    assert str(bad) in error and "corrupt" in error and "Traceback" not in error
    assert not (contract / "model" / "model.json").exists()


def test_checkpoint_of_another_algorithm_is_refused(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--algorithm", "cnn", "--epochs", "1", *FAST]) == 0
    code = main(
        ["--algorithm", "image-classification", "--epochs", "2", "--stem", "imagenet", *FAST]
    )
    assert code == 2 and "from algorithm 'cnn'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"SM_CHANNEL_VALIDATION": None}, "needs a 'validation' channel"),
        ({"SM_CHANNEL_TRAIN": "/nonexistent/train"}, "does not exist"),
        ({"SM_MODEL_DIR": None}, "SM_MODEL_DIR is not set"),
        ({"SM_HOSTS": "algo-1"}, "JSON list"),
        ({"SM_CURRENT_HOST": "algo-9"}, "not in SM_HOSTS"),
    ],
    ids=["no-validation", "missing-folder", "no-model-dir", "hosts-not-json", "unknown-host"],
)
def test_bad_contract_environment_is_a_clear_error(
    contract: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str | None],
    message: str,
) -> None:
    for name, value in change.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    assert main(["--algorithm", "cnn", "--epochs", "1"]) == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_empty_channel_is_refused(
    contract: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = contract / "empty"
    empty.mkdir()
    monkeypatch.setenv("SM_CHANNEL_TRAIN", str(empty))
    assert main(["--algorithm", "cnn", "--epochs", "1"]) == 2
    assert "channel 'train'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "0"], "out of range"),
        (["--optimizer", "adagrad"], "valid values: sgd, adam, rmsprop, nag"),
    ],
    ids=["zero-epochs", "optimizer"],
)
def test_bad_hyperparameters_fail_before_training(
    contract: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert main(["--algorithm", "cnn", *argv]) == 2
    assert message in capsys.readouterr().err


def test_early_stopping_ends_training_and_keeps_the_best_epoch(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--algorithm", "cnn", "--epochs", "12", "--early_stopping", "1", *FAST]
    argv += ["--early_stopping_min_epochs", "2", "--early_stopping_patience", "1"]
    argv += ["--model_selection_metric", "validation:loss", "--early_stopping_tolerance", "0.5"]
    assert main(argv) == 0
    epochs = sorted(_metric_epochs(capsys.readouterr().out))
    assert 2 <= len(epochs) < 12
    description = json.loads((contract / "model" / "model.json").read_text())
    best = description["metrics"]["best"]["validation:loss"]
    history = json.loads((contract / "output" / "history.json").read_text())
    assert best == min(entry["validation:loss"] for entry in history)
    assert description["metrics"]["best_epoch"] in epochs


def test_image_classification_from_local_imagenet_weights(
    contract: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchvision.models import resnet18

    weights = contract / "resnet18-imagenet.pth"
    torch.save(resnet18(weights=None).state_dict(), weights)
    # The imagenet stem keeps this fast; the 3x3 stem crop is covered in test_models.
    argv = ["--algorithm", "image-classification", "--epochs", "1", "--stem", "imagenet"]
    argv += ["--use_pretrained_model", "1", "--pretrained_weights", str(weights)]
    argv += ["--augmentation_type", "crop_color_transform", "--optimizer", "nag", *FAST]
    assert main(argv) == 0
    assert set(_metric_epochs(capsys.readouterr().out)[1]) >= set(METRIC_NAMES)
    description = json.loads((contract / "model" / "model.json").read_text())
    assert description["algorithm"] == "image-classification"
    assert description["hyperparameters"]["pretrained_weights"] == str(weights)
    assert description["onnx"]["parity_max_abs_diff"] < 1e-3
