"""``bcd.testing.models.write_tiny_model``: a real ONNX model other tests rely on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.serving import ModelRuntime, load_model_spec
from bcd.testing.models import write_tiny_model


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_the_graph_is_valid_at_each_opset(tmp_path: Path, opset: int) -> None:
    import onnx

    model = write_tiny_model(tmp_path / "m", opset=opset, size=32)
    onnx.checker.check_model(onnx.load(str(model / "model.onnx")))
    spec = load_model_spec(model)
    assert (spec.height, spec.width) == (32, 32)
    document = json.loads((model / "model.json").read_text())
    assert document["onnx"]["opset"] == opset and document["input"]["pad_value"] == 255
    runtime = ModelRuntime(model, threads=1)
    try:
        assert runtime.predict([np.zeros((32, 32, 3), np.uint8)]).shape == (1, 2)
    finally:
        runtime.close()


def test_it_separates_real_patches_better_than_chance(shared_data: Path, tiny_model: Path) -> None:
    patients = sorted(p for p in os.listdir(shared_data) if p.isdigit())[:6]
    images: list[np.ndarray] = []
    labels: list[int] = []
    for patient in patients:
        for label in (0, 1):
            for path in sorted((shared_data / patient / str(label)).glob("*.png"))[:25]:
                images.append(np.asarray(Image.open(path).convert("RGB")))
                labels.append(label)
    runtime = ModelRuntime(tiny_model, threads=1)
    try:
        predicted = runtime.predict(images).argmax(axis=1)
    finally:
        runtime.close()
    truth = np.array(labels)
    recalls = [(predicted[truth == c] == c).mean() for c in (0, 1)]
    assert np.mean(recalls) > 0.65, recalls


def test_bias_makes_constant_models(tmp_path: Path) -> None:
    idc = write_tiny_model(tmp_path / "idc", weight=0.0, bias=(0, 20))
    runtime = ModelRuntime(idc, threads=1)
    try:
        probabilities = runtime.predict([np.full((50, 50, 3), 250, np.uint8)])
    finally:
        runtime.close()
    assert probabilities[0, 1] > 0.999
