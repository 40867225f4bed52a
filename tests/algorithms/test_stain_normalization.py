"""``stain_normalization``: fitted in training, stored in model.json, applied alike when serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bcd.algorithms import get_algorithm
from bcd.algorithms.augment import center_crop, normalize
from bcd.algorithms.channels import open_channel_data
from bcd.algorithms.distillation import score_teacher
from bcd.algorithms.environment import TrainingEnvironment
from bcd.algorithms.train import main, setup
from bcd.errors import InvalidInputError
from bcd.serving import ModelRuntime, Preprocessor, load_model_spec

FAST = ["--mini_batch_size", "16", "--seed", "1", "--epochs", "1"]


@pytest.mark.parametrize("algorithm", ["cnn", "image-classification"])
def test_hyperparameter_values(algorithm: str) -> None:
    spec = get_algorithm(algorithm)
    assert spec.validate_hyperparameters({})["stain_normalization"] == "none"
    for method in ("reinhard", "Macenko"):
        values = spec.validate_hyperparameters({"stain_normalization": method})
        assert values["stain_normalization"] == method.lower()
    with pytest.raises(InvalidInputError, match="none, reinhard, macenko"):
        spec.validate_hyperparameters({"stain_normalization": "vahadane"})


@pytest.fixture(scope="module", params=["reinhard", "macenko"])
def trained(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    channels: dict[str, Path],
) -> tuple[str, Path, dict[str, Path]]:
    """A one-epoch cnn trained with the method, and the job's contract environment."""
    from .conftest import contract_env

    method = request.param
    job = tmp_path_factory.mktemp(f"stain-{method}")
    env = contract_env(job, channels, checkpoints=False)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        argv = ["--algorithm", "cnn", *FAST, "--stain_normalization", method]
        assert main(argv) == 0
    return method, job, env


def test_reference_is_written_to_model_json(trained: tuple[str, Path, dict[str, Path]]) -> None:
    method, job, _ = trained
    description = json.loads((job / "model" / "model.json").read_text())
    block = description["input"]["stain_normalization"]
    assert block["method"] == method
    assert block["reference"] == {"patches": 64, "seed": 0, "min_tissue": 0.75}
    assert description["hyperparameters"]["stain_normalization"] == method
    spec = load_model_spec(job / "model")
    assert spec.stain is not None and spec.stain.to_json() == block


def test_training_and_serving_apply_the_same_transform(
    trained: tuple[str, Path, dict[str, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    method, job, env = trained
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    hyperparameters = get_algorithm("cnn").validate_hyperparameters(
        {"stain_normalization": method, "mini_batch_size": 16, "seed": 1, "epochs": 1}
    )
    training = setup("cnn", hyperparameters, TrainingEnvironment.from_environ())
    raw = open_channel_data(env["SM_CHANNEL_VALIDATION"], "validation").images[:32]
    spec = load_model_spec(job / "model")
    assert spec.stain is not None
    # The same uint8 patches reach the network's scaling in both paths...
    np.testing.assert_array_equal(spec.stain(raw), training.validation.images[:32])
    assert not np.array_equal(np.asarray(raw), training.validation.images[:32])
    # ...and the same float batch reaches the network.
    served = Preprocessor(spec).normalise(np.asarray(raw))
    trained_batch = normalize(
        center_crop(
            torch.from_numpy(training.validation.images[:32]).permute(0, 3, 1, 2), (50, 50)
        ),
        training.mean,
        training.std,
    )
    np.testing.assert_allclose(served, trained_batch.numpy(), atol=1e-5)
    assert list(spec.mean) == pytest.approx(list(training.normalization[0]))


def test_model_serves_through_model_runtime(trained: tuple[str, Path, dict[str, Path]]) -> None:
    from bcd.algorithms.artifacts import load_model

    _, job, env = trained
    raw = np.array(open_channel_data(env["SM_CHANNEL_VALIDATION"], "validation").images[:24])
    spec = load_model_spec(job / "model")
    assert spec.stain is not None
    runtime = ModelRuntime(job / "model", threads=1, max_wait_ms=0)
    try:
        served = runtime.predict(list(raw), tta=False, timeout=30)
    finally:
        runtime.close()
    model = load_model(job / "model")
    description = json.loads((job / "model" / "model.json").read_text())
    mean = torch.tensor(description["input"]["mean"])
    std = torch.tensor(description["input"]["std"])
    inputs = normalize(torch.from_numpy(spec.stain(raw)).permute(0, 3, 1, 2), mean, std)
    with torch.no_grad():
        expected = torch.softmax(model(inputs), dim=1).numpy()
    np.testing.assert_allclose(served, expected, atol=1e-4)
    # Without the stain step the same model scores the raw patches differently.
    with torch.no_grad():
        raw_inputs = normalize(torch.from_numpy(raw).permute(0, 3, 1, 2), mean, std)
        unnormalised = torch.softmax(model(raw_inputs), dim=1).numpy()
    assert np.abs(unnormalised - served).max() > 1e-3


def test_teacher_scores_apply_the_teachers_stain(
    trained: tuple[str, Path, dict[str, Path]],
) -> None:
    _, job, env = trained
    raw = np.asarray(open_channel_data(env["SM_CHANNEL_TRAIN"], "train").images[:16])
    logits = score_teacher(job / "model", raw, threads=1)
    runtime = ModelRuntime(job / "model", threads=1, max_wait_ms=0)
    try:
        served = runtime.predict(list(raw), tta=False, timeout=30)
    finally:
        runtime.close()
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(probabilities, served, atol=1e-4)
