"""A tiny but real model folder (``model.onnx`` + ``model.json``) for tests.

The graph is built with ``onnx.helper`` (no torch): it averages each colour
channel of the normalised input and maps the three means to two logits,

    logit_IDC = -weight · (r̄ + ḡ + b̄) + bias[1],   logit_noIDC = -logit_IDC + …

so dark, purple (dense nuclei) patches score IDC and pale pink or white
patches score no IDC — roughly what real IDC patches look like, enough for
tests that check serving end to end with real data.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import bcd

# Halfway between the mean colours of no-IDC and IDC patches in ../shared/data,
# so that the sign of the normalised mean colour separates the two classes.
TINY_MEAN = (0.75, 0.56, 0.71)
TINY_STD = (0.12, 0.16, 0.11)


def write_tiny_model(
    directory: Path | str,
    *,
    size: int = 50,
    weight: float = 1.0,
    bias: Sequence[float] = (0.0, 0.0),
    mean: Sequence[float] = TINY_MEAN,
    std: Sequence[float] = TINY_STD,
    temperature: float = 1.0,
    tta: bool = False,
    pad_value: int = 255,
    opset: int = 17,
    extra: dict[str, object] | None = None,
) -> Path:
    """Write a tiny ONNX classifier and its ``model.json`` into ``directory``.

    Args:
        directory: Folder to create (parents too); existing files are replaced.
        size: Input height and width (the graph takes ``(N, 3, size, size)``).
        weight: How strongly darkness pushes towards IDC (logit scale).
        bias: Added to the two logits; e.g. ``(0, 20)`` makes a model that
            always answers IDC, which tells variants apart in tests.
        mean: Normalisation mean written to ``model.json`` (0–1 scale).
        std: Normalisation standard deviation written to ``model.json``.
        temperature: Written to ``model.json``; serving divides logits by it.
        tta: Written to ``model.json``; turns test-time augmentation on by default.
        pad_value: Written to ``model.json``; fills patches smaller than the input.
        opset: ONNX opset of the graph.
        extra: More top-level ``model.json`` keys (overrides the defaults).

    Returns:
        The model folder.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    projection = np.array([[weight, -weight]] * 3, dtype=np.float32)  # (3, 2)
    offsets = np.asarray(bias, dtype=np.float32).reshape(2)  # (2,)
    initializers = [
        numpy_helper.from_array(projection, "projection"),
        numpy_helper.from_array(offsets, "offsets"),
    ]
    if opset >= 18:  # ReduceMean takes its axes as an input from opset 18 on
        initializers.append(numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes"))
        reduce = helper.make_node("ReduceMean", ["images", "axes"], ["colour"], keepdims=0)
    else:
        reduce = helper.make_node("ReduceMean", ["images"], ["colour"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        nodes=[
            reduce,
            helper.make_node("MatMul", ["colour", "projection"], ["scores"]),
            helper.make_node("Add", ["scores", "offsets"], ["logits"]),
        ],
        name="tiny-mean-colour",
        inputs=[helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs=[helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    _write_bytes(directory / "model.onnx", model.SerializeToString())

    document: dict[str, object] = {
        "format_version": 1,
        "algorithm": "tiny-mean-colour",
        "hyperparameters": {"weight": weight, "bias": list(map(float, bias))},
        "input": {
            "shape": [3, size, size],
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 255.0,
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "pad_value": pad_value,
        },
        "class_names": ["no IDC", "IDC"],
        "temperature": temperature,
        "tta": tta,
        "onnx": {
            "file": "model.onnx",
            "input_name": "images",
            "output_name": "logits",
            "opset": opset,
            "parity_max_abs_diff": 0.0,
        },
        "metrics": {},
        "dataset": {},
        "bcd_version": bcd.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(),
    }
    document.update(extra or {})
    _write_bytes(directory / "model.json", json.dumps(document, indent=2).encode())
    return directory


def _write_bytes(path: Path, data: bytes) -> None:
    # Write aside, then rename: a reader never sees half a file.
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
