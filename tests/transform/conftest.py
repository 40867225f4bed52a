"""Fixtures for batch transform tests: a tiny ONNX model, patch folders, slides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bcd.testing import make_bad_files, make_synthetic_tree
from bcd.testing.models import write_tiny_model


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    """A real ONNX model folder: dark purple patches score IDC."""
    return write_tiny_model(tmp_path / "model")


@pytest.fixture
def patch_folder(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A dataset-layout folder of 3 × 40 synthetic patches plus 6 bad files (name → why)."""
    root = tmp_path / "patches"
    make_synthetic_tree(root, n_patients=3, patches_per_patient=40, seed=3)
    return root, make_bad_files(root)


def _slide(path: Path, tumour: bool, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    image = np.full((500, 700, 3), 250, dtype=np.uint8)  # glass
    image[100:400, 100:600] = (220, 150, 200)  # pink stroma
    if tumour:
        image[150:350, 200:450] = (110, 50, 140)  # dark purple block
    noise = rng.integers(-6, 7, size=image.shape)
    Image.fromarray(np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def slide_folder(tmp_path: Path) -> Path:
    """Two PNG slide regions (one with a tumour block) and one corrupt slide file."""
    root = tmp_path / "slides"
    root.mkdir()
    _slide(root / "a-tumour.png", tumour=True, seed=1)
    _slide(root / "b-benign.png", tumour=False, seed=2)
    (root / "c-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    return root


@pytest.fixture
def request_for(tiny_model: Path, tmp_path: Path) -> Callable[..., dict[str, Any]]:
    """Build a ``create_transform_job`` request over an input, writing to tmp_path/out-NAME."""

    def build(name: str, uri: str | Path, **overrides: Any) -> dict[str, Any]:
        request: dict[str, Any] = {
            "TransformJobName": name,
            "ModelName": str(tiny_model),
            "TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": str(uri)}}},
            "TransformOutput": {"S3OutputPath": str(tmp_path / f"out-{name}")},
            "MaxPayloadInMB": 1,
        }
        request.update(overrides)
        return request

    return build
