"""Serving a model whose model.json carries a reference stain (input.stain_normalization)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bcd.errors import InvalidInputError
from bcd.serving import ModelRuntime, Preprocessor, load_model_spec
from bcd.stain import StainNormalizer
from bcd.testing import synthetic_patch


def _patches(count: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    return np.stack(
        [synthetic_patch(i % 2, rng, stain_shift=rng.normal(0, 15, 3)) for i in range(count)]
    )


def _with_stain(tiny_model: Path, folder: Path, block: object) -> Path:
    shutil.copytree(tiny_model, folder)
    description = json.loads((folder / "model.json").read_text())
    description["input"]["stain_normalization"] = block
    (folder / "model.json").write_text(json.dumps(description))
    return folder


@pytest.fixture(scope="module", params=["reinhard", "macenko"])
def stain(request: pytest.FixtureRequest) -> StainNormalizer:
    return StainNormalizer.fit(request.param, _patches(64))


def test_runtime_normalises_before_scoring(
    tiny_model: Path, tmp_path: Path, stain: StainNormalizer
) -> None:
    folder = _with_stain(tiny_model, tmp_path / "stained", stain.to_json())
    patches = _patches(12)
    small = patches[0, :30, :40]  # padded to 50x50 first, then normalised, as in training
    with_stain = ModelRuntime(folder, threads=1, max_wait_ms=0)
    plain = ModelRuntime(tiny_model, threads=1, max_wait_ms=0)
    try:
        served = with_stain.predict([*patches, small], tta=False, timeout=30)
        padded = plain.preprocess.stack([small])
        expected = plain.predict([*stain(patches), *stain(padded)], tta=False, timeout=30)
        unnormalised = plain.predict(list(patches), tta=False, timeout=30)
        with_tta = with_stain.predict(list(patches[:4]), tta=True, timeout=30)
        expected_tta = plain.predict(list(stain(patches[:4])), tta=True, timeout=30)
    finally:
        with_stain.close()
        plain.close()
    np.testing.assert_allclose(served, expected, atol=1e-6)
    assert np.abs(served[:-1] - unnormalised).max() > 1e-3
    # Stain normalisation commutes with the dihedral views of test-time augmentation
    # (up to float summation order in the per-patch statistics).
    np.testing.assert_allclose(with_tta, expected_tta, atol=1e-4)


def test_spec_without_block_has_no_stain(tiny_model: Path) -> None:
    spec = load_model_spec(tiny_model)
    assert spec.stain is None and Preprocessor(spec).stain is None


@pytest.mark.parametrize(
    "block",
    [{"method": "reinhard", "target": {"means": [1, 2, 3]}}, {"method": "zca"}, "reinhard"],
    ids=["missing-stds", "unknown-method", "not-object"],
)
def test_malformed_block_fails_at_load(tiny_model: Path, tmp_path: Path, block: object) -> None:
    folder = _with_stain(tiny_model, tmp_path / "bad", block)
    with pytest.raises(InvalidInputError, match="stain_normalization"):
        load_model_spec(folder)


def test_serving_a_stain_model_never_imports_torch(
    tiny_model: Path, tmp_path: Path, stain: StainNormalizer
) -> None:
    folder = _with_stain(tiny_model, tmp_path / "stained", stain.to_json())
    np.save(tmp_path / "patches.npy", _patches(6))
    code = f"""
import sys
sys.modules["torch"] = None  # the serve extra has no torch: any import of it fails
import numpy as np
from bcd.serving import ModelRuntime
runtime = ModelRuntime({str(folder)!r}, threads=1, max_wait_ms=0)
probabilities = runtime.predict(list(np.load({str(tmp_path / "patches.npy")!r})), timeout=30)
runtime.close()
assert probabilities.shape == (6, 2)
assert "torchstain.numpy" in sys.modules
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
