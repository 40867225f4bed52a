"""Helpers for registry tests: model folders and variants in boto3's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL_JSON: dict[str, Any] = {
    "format_version": 1,
    "algorithm": "cnn",
    "hyperparameters": {"epochs": 1},
    "input": {
        "shape": [3, 50, 50],
        "layout": "NCHW",
        "dtype": "float32",
        "scale": 255.0,
        "mean": [0.8, 0.62, 0.78],
        "std": [0.12, 0.16, 0.11],
        "pad_value": 255,
    },
    "class_names": ["no IDC", "IDC"],
    "temperature": 1.0,
    "onnx": {"file": "model.onnx", "input_name": "images", "output_name": "logits", "opset": 17},
}


def write_artifact(
    folder: Path, onnx_bytes: bytes = b"onnx-graph-placeholder", **overrides: Any
) -> Path:
    """A model folder the registry accepts: model.json plus an ONNX file.

    The registry never opens the graph, so a placeholder file does here.
    """
    folder.mkdir(parents=True, exist_ok=True)
    document = {**MODEL_JSON, **overrides}
    (folder / "model.json").write_text(json.dumps(document))
    (folder / document["onnx"]["file"]).write_bytes(onnx_bytes)
    return folder


def variant(name: str, model_name: str, weight: float = 1.0, instances: int = 1) -> dict[str, Any]:
    """A production variant in boto3's shape."""
    return {
        "VariantName": name,
        "ModelName": model_name,
        "InitialInstanceCount": instances,
        "InitialVariantWeight": weight,
    }
