"""Ensembles of trained model folders served as one ONNX graph (bcd.algorithms.ensemble)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bcd.algorithms import get_algorithm, load_model
from bcd.algorithms.artifacts import write_artifacts
from bcd.algorithms.ensemble import EnsembleNet, input_affine, write_ensemble
from bcd.algorithms.models import build_model
from bcd.errors import InvalidInputError
from bcd.evaluation._inference import RuntimeScorer
from bcd.serving import ModelRuntime

MEANS = [(0.8, 0.6, 0.7), (0.485, 0.456, 0.406)]
STDS = [(0.15, 0.21, 0.15), (0.229, 0.224, 0.225)]


def _member(folder: Path, architecture: str, seed: int, index: int) -> Path:
    torch.manual_seed(seed)
    hyperparameters = get_algorithm("cnn").validate_hyperparameters({"architecture": architecture})
    model = build_model("cnn", hyperparameters).eval()
    # Random batch-norm statistics, so the members' margins spread and differ.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    write_artifacts(
        folder,
        model,
        algorithm="cnn",
        hyperparameters=hyperparameters,
        mean=MEANS[index],
        std=STDS[index],
        parity_batch=torch.randn(4, 3, 50, 50),
        metrics={},
        dataset={"name": "synthetic"},
    )
    return folder


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("members")
    return [
        _member(root / "deep", "deep", seed=1, index=0),
        _member(root / "original", "original", seed=2, index=1),
    ]


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (96, 50, 50, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def ensemble(
    members: list[Path], patches: np.ndarray, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("ensemble")
    write_ensemble(members, out, patches[:64], weights=[3.0, 1.0], names=["a", "b"])
    return out


def _margins(folder: Path, images: np.ndarray) -> np.ndarray:
    scorer = RuntimeScorer(folder, threads=1)
    try:
        return scorer.margins(images, tta=False)[0]
    finally:
        scorer.close()


def test_ensemble_margin_is_the_weighted_mean_of_standardised_member_margins(
    members: list[Path], patches: np.ndarray, ensemble: Path
) -> None:
    fitted = [_margins(folder, patches[:64]) for folder in members]
    held_out = [_margins(folder, patches[64:]) for folder in members]
    expected = sum(
        weight * (margin - fit.mean()) / fit.std()
        for weight, fit, margin in zip([0.75, 0.25], fitted, held_out, strict=True)
    )
    centre = np.mean([fit.mean() for fit in fitted])
    scale = np.mean([fit.std() for fit in fitted])
    expected = centre + scale * expected
    combined = _margins(ensemble, patches[64:])
    assert np.ptp(combined) > 50 * 2e-4  # far above the tolerance: the margins vary
    np.testing.assert_allclose(combined, expected, atol=2e-4)


def test_model_json_records_members_and_the_first_members_input(
    members: list[Path], ensemble: Path
) -> None:
    document = json.loads((ensemble / "model.json").read_text())
    first = json.loads((members[0] / "model.json").read_text())
    assert document["algorithm"] == "ensemble"
    assert document["input"] == first["input"]
    listed = document["ensemble"]["members"]
    assert [member["name"] for member in listed] == ["a", "b"]
    assert [member["weight"] for member in listed] == pytest.approx([0.75, 0.25])
    assert listed[1]["input"]["mean"] == list(MEANS[1])
    assert all(member["scale"] > 0 for member in listed)


def test_load_model_rebuilds_the_ensemble_and_serving_matches_it(
    ensemble: Path, patches: np.ndarray
) -> None:
    model = load_model(ensemble)
    assert isinstance(model, EnsembleNet)
    runtime = ModelRuntime(ensemble, threads=1, max_batch_size=32)
    try:
        served = runtime.predict(list(patches[:32]))  # (32, 2) probabilities
        batch = runtime.preprocess.normalise(patches[:32])
    finally:
        runtime.close()
    with torch.no_grad():
        logits = model(torch.from_numpy(batch)).numpy()
    rebuilt = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    np.testing.assert_allclose(served, rebuilt, atol=1e-4)


def test_grad_cam_explains_an_ensemble(ensemble: Path, patches: np.ndarray) -> None:
    pytest.importorskip("captum")
    from bcd.slides._explain import load_explainer

    maps = load_explainer(ensemble).heatmaps(patches[:3])
    assert maps.shape[0] == 3
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0
    assert maps.max() <= 1.0


def test_input_affine_maps_one_normalisation_onto_another() -> None:
    target = {"scale": 255.0, "mean": list(MEANS[0]), "std": list(STDS[0])}
    member = {"scale": 255.0, "mean": list(MEANS[1]), "std": list(STDS[1])}
    gains, offsets = input_affine(target, member)
    pixels = np.array([0.0, 0.5, 1.0])
    for channel in range(3):
        ours = (pixels - MEANS[0][channel]) / STDS[0][channel]
        theirs = (pixels - MEANS[1][channel]) / STDS[1][channel]
        np.testing.assert_allclose(ours * gains[channel] + offsets[channel], theirs, atol=1e-12)
    with pytest.raises(InvalidInputError, match="scale pixels differently"):
        input_affine(target, {**member, "scale": 1.0})


def test_an_ensemble_needs_two_members_and_positive_scales(
    members: list[Path], patches: np.ndarray, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="at least two"):
        write_ensemble(members[:1], tmp_path / "one", patches)
    with pytest.raises(InvalidInputError, match="positive"):
        EnsembleNet([torch.nn.Identity()], [[1, 1, 1]], [[0, 0, 0]], [0.0], [0.0])
    blank = np.full((8, 50, 50, 3), 255, dtype=np.uint8)
    with pytest.raises(InvalidInputError, match="constant"):
        write_ensemble(members, tmp_path / "blank", blank)


def test_members_with_stain_normalisation_are_refused(
    members: list[Path], patches: np.ndarray, tmp_path: Path
) -> None:
    import shutil

    stained = tmp_path / "stained"
    shutil.copytree(members[1], stained)
    document = json.loads((stained / "model.json").read_text())
    document["input"]["stain_normalization"] = {"method": "reinhard"}
    (stained / "model.json").write_text(json.dumps(document))
    with pytest.raises(InvalidInputError, match="stain_normalization"):
        write_ensemble([members[0], stained], tmp_path / "out", patches)
