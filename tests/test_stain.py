"""Stain normalisation (bcd.stain): torchstain's transforms, the reference fit, pass-through."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from bcd.errors import InvalidInputError
from bcd.stain import MIN_TISSUE_FRACTION, StainNormalizer, reference_patches, tissue_fraction
from bcd.testing import synthetic_patch


def _patches(count: int, seed: int = 0) -> np.ndarray:
    """H&E-like patches of both classes with a per-patch stain shift."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            synthetic_patch(index % 2, rng, stain_shift=rng.normal(0, 12, 3))
            for index in range(count)
        ]
    )


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return _patches(96)


@pytest.fixture(scope="module", params=["reinhard", "macenko"])
def normalizer(request: pytest.FixtureRequest, patches: np.ndarray) -> StainNormalizer:
    return StainNormalizer.fit(request.param, patches)


def _torchstain(normalizer: StainNormalizer) -> object:
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer, NumpyReinhardNormalizer

    if normalizer.method == "reinhard":
        reinhard = NumpyReinhardNormalizer()
        reinhard.target_means = np.array(normalizer.target["means"])
        reinhard.target_stds = np.array(normalizer.target["stds"])
        return reinhard
    macenko = NumpyMacenkoNormalizer()
    macenko.HERef = np.array(normalizer.target["stain_matrix"]).reshape(3, 2)
    macenko.maxCRef = np.array(normalizer.target["max_concentrations"])
    return macenko


def test_batch_matches_torchstain_patch_by_patch(
    normalizer: StainNormalizer, patches: np.ndarray
) -> None:
    batch = patches[:24]
    reference = _torchstain(normalizer)
    # Macenko estimates from pixels with optical density >= 0.15 in every channel;
    # patches with fewer than min_stain_pixels of them are left as they are.
    dense = (-np.log((batch.astype(float) + 1) / 240) >= 0.15).all(axis=-1).sum(axis=(1, 2))
    estimable = dense >= normalizer.min_stain_pixels if normalizer.method == "macenko" else None
    expected = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for index, patch in enumerate(batch):
            if estimable is not None and not estimable[index]:
                expected.append(patch)
            elif normalizer.method == "reinhard":
                expected.append(reference.normalize(patch))  # type: ignore[attr-defined]
            else:
                expected.append(reference.normalize(patch, stains=False)[0])  # type: ignore[attr-defined]
    result = normalizer(batch)
    assert result.dtype == np.uint8 and result.shape == batch.shape
    np.testing.assert_array_equal(result, np.stack(expected))
    changed = (result != batch).any(axis=(1, 2, 3))
    assert changed.sum() >= 12


def _restain(patch: np.ndarray, strength: float) -> np.ndarray:
    """The same tissue stained lighter (< 1) or darker (> 1): optical density scaled."""
    density = -np.log((patch.astype(float) + 1) / 256)
    return np.clip(256 * np.exp(-strength * density) - 1, 0, 255).astype(np.uint8)


def test_normalisation_pulls_restained_tissue_together(normalizer: StainNormalizer) -> None:
    tissue = synthetic_patch(1, np.random.default_rng(5))
    light, dark = _restain(tissue, 0.7), _restain(tissue, 1.4)
    before = np.abs(light.astype(int) - dark.astype(int)).mean()
    out = normalizer(np.stack([light, dark])).astype(int)
    assert np.abs(out[0] - out[1]).mean() < 0.5 * before


def test_reference_fit_is_deterministic(patches: np.ndarray) -> None:
    first = StainNormalizer.fit("reinhard", patches)
    assert StainNormalizer.fit("reinhard", patches.copy()) == first
    assert StainNormalizer.fit("reinhard", patches, seed=1) != first
    chosen = reference_patches(patches, count=8)
    assert chosen.shape == (8, 50, 50, 3)
    assert (tissue_fraction(chosen) >= 0.75).all()


@pytest.mark.parametrize(
    "patch",
    [
        np.full((50, 50, 3), 255, np.uint8),
        np.full((50, 50, 3), 240, np.uint8),
        np.full((50, 50, 3), 180, np.uint8),  # tissue-dark but flat: no spread, no stain plane
        np.zeros((50, 50, 3), np.uint8),
    ],
    ids=["white", "glass", "flat-tissue", "black"],
)
def test_degenerate_patches_pass_through(normalizer: StainNormalizer, patch: np.ndarray) -> None:
    batch = patch[np.newaxis]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN casts or divisions by zero either
        np.testing.assert_array_equal(normalizer(batch), batch)


def test_mostly_background_patch_passes_through(
    normalizer: StainNormalizer, patches: np.ndarray
) -> None:
    mostly_white = np.full((50, 50, 3), 250, np.uint8)
    mostly_white[:10] = patches[1, :10]  # 20 % tissue
    assert tissue_fraction(mostly_white[np.newaxis])[0] < MIN_TISSUE_FRACTION
    mixed = np.stack([mostly_white, patches[1]])
    out = normalizer(mixed)
    np.testing.assert_array_equal(out[0], mostly_white)
    assert not np.array_equal(out[1], patches[1])


def test_few_dense_pixels_pass_through_macenko(patches: np.ndarray) -> None:
    macenko = StainNormalizer.fit("macenko", patches)
    pale = np.full((1, 50, 50, 3), 225, np.uint8)  # tissue by density, but too pale to estimate
    pale[0, :3, :3] = 120
    assert tissue_fraction(pale)[0] >= MIN_TISSUE_FRACTION
    np.testing.assert_array_equal(macenko(pale), pale)


def test_json_round_trip(normalizer: StainNormalizer) -> None:
    document = normalizer.to_json()
    assert document["method"] == normalizer.method
    assert StainNormalizer.from_json(document) == normalizer
    assert StainNormalizer.from_json(None) is None
    assert StainNormalizer.from_json({"method": "none"}) is None


@pytest.mark.parametrize(
    "document",
    [
        {"method": "zca"},
        {"method": "reinhard"},
        {"method": "reinhard", "target": {"means": [1, 2], "stds": [1, 1, 1]}},
        {"method": "reinhard", "target": {"means": [1, 2, 3], "stds": [1, 0, 1]}},
        {"method": "macenko", "target": {"stain_matrix": [0.1] * 6, "max_concentrations": "x"}},
        ["reinhard"],
    ],
    ids=["unknown", "no-target", "short", "zero-std", "bad-type", "not-object"],
)
def test_malformed_json_is_refused(document: object) -> None:
    with pytest.raises(InvalidInputError, match="stain"):
        StainNormalizer.from_json(document)


def test_fit_without_tissue_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="no tissue"):
        StainNormalizer.fit("reinhard", np.full((10, 50, 50, 3), 255, np.uint8))
    with pytest.raises(InvalidInputError, match="unknown stain"):
        StainNormalizer.fit("vahadane", _patches(4))


def test_runs_without_torch(normalizer: StainNormalizer, tmp_path: Path) -> None:
    """Serving's extra has no torch: bcd.stain and torchstain's numpy backend must not need it."""
    batch = _patches(4, seed=9)
    np.save(tmp_path / "batch.npy", batch)
    np.save(tmp_path / "expected.npy", normalizer(batch))
    code = f"""
import json, sys
sys.modules["torch"] = None  # importing torch now fails
import numpy as np
from bcd.stain import StainNormalizer
stain = StainNormalizer.from_json(json.loads({json.dumps(normalizer.to_json())!r}))
out = stain(np.load({str(tmp_path / "batch.npy")!r}))
assert (out == np.load({str(tmp_path / "expected.npy")!r})).all()
assert not any(name == "torch" or name.startswith("torch.") for name in sys.modules
               if sys.modules[name] is not None)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_registry_refuses_a_malformed_block(normalizer: StainNormalizer) -> None:
    from bcd.registry._artifacts import validate_model_json

    document = {
        "format_version": 1,
        "input": {"shape": [3, 50, 50], "scale": 255.0, "mean": [0.5] * 3, "std": [0.2] * 3},
        "class_names": ["no IDC", "IDC"],
        "onnx": {"file": "model.onnx", "input_name": "images", "output_name": "logits"},
    }
    document["input"]["stain_normalization"] = normalizer.to_json()
    assert validate_model_json(document, "m") is document
    document["input"]["stain_normalization"] = {"method": normalizer.method, "target": {}}
    with pytest.raises(InvalidInputError, match=r"m: input\.stain_normalization"):
        validate_model_json(document, "m")


def test_the_suite_package_is_not_shadowed_by_torchstains_tests() -> None:
    # torchstain's wheel ships a top-level ``tests`` package; this suite must win.
    import tests

    assert Path(tests.__file__).resolve().parent == Path(__file__).resolve().parent


def test_reference_tops_up_with_the_most_tissue_rich_patches() -> None:
    pale = np.full((6, 50, 50, 3), 250, np.uint8)
    for index, rows in enumerate([5, 40, 10, 30, 20, 0]):  # tissue share rows / 50
        pale[index, :rows] = 120
    chosen = reference_patches(pale, count=3, min_tissue=0.99)
    np.testing.assert_array_equal(tissue_fraction(chosen), [0.8, 0.6, 0.4])
