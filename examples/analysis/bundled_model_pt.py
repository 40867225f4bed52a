"""Build ``bcd/bundled/model.pt`` (a torch state dict) from the shipped ``model.onnx``.

The bundled model ships as ONNX only, and the export folded every batch norm
into the convolution before it, so the graph holds five biased convolutions
and one dense layer. This script reads those initializers with ``onnx`` and
loads them into the same :class:`bcd.algorithms.models.DeepCNN` that
``model.json`` describes: each convolution takes the folded kernel, and its
batch norm becomes an identity carrying the folded bias (weight 1, running
mean 0, running variance ``1 - eps``, so ``sqrt(var + eps)`` is 1). The result
loads with ``bcd.algorithms.load_model(folder)`` like any trained model's
``model.pt``, which is what Grad-CAM explanations need (see docs/slides.md).

Before saving it checks the torch network's logits against ONNX Runtime's on
real patches from ``../shared/data`` (max abs diff below 1e-4) and refuses to
write otherwise.

Usage::

    .venv/bin/python examples/analysis/bundled_model_pt.py            # writes bcd/bundled/model.pt
    .venv/bin/python examples/analysis/bundled_model_pt.py --check    # compares only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "bcd" / "bundled"
DATA = ROOT.parent / "shared" / "data" / "IDC_regular_ps50_idx5"
# Conv layers of DeepCNN.features, in graph order; each one's batch norm follows it.
CONV_INDICES = (0, 4, 8, 11, 15)
TOLERANCE = 1e-4


def state_dict_from_onnx(onnx_path: Path) -> dict[str, object]:
    """The DeepCNN state dict equivalent to the folded ONNX graph."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    weights = {item.name: numpy_helper.to_array(item) for item in graph.initializer}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    gemm = next(node for node in graph.node if node.op_type == "Gemm")
    if len(convs) != len(CONV_INDICES):
        raise SystemExit(f"expected {len(CONV_INDICES)} Conv nodes, found {len(convs)}")
    transposed = {attr.name: attr.i for attr in gemm.attribute}.get("transB", 0)
    state: dict[str, object] = {}
    eps = 1e-5  # torch.nn.BatchNorm2d's default, which DeepCNN uses
    for index, node in zip(CONV_INDICES, convs, strict=True):
        kernel, bias = weights[node.input[1]], weights[node.input[2]]
        channels = kernel.shape[0]
        state[f"features.{index}.weight"] = torch.from_numpy(kernel.copy())
        norm = f"features.{index + 1}"
        state[f"{norm}.weight"] = torch.ones(channels)
        state[f"{norm}.bias"] = torch.from_numpy(bias.copy())
        state[f"{norm}.running_mean"] = torch.zeros(channels)
        state[f"{norm}.running_var"] = torch.full((channels,), 1.0 - eps)
        state[f"{norm}.num_batches_tracked"] = torch.tensor(0)
    dense = weights[gemm.input[1]]
    state["classifier.2.weight"] = torch.from_numpy((dense if transposed else dense.T).copy())
    state["classifier.2.bias"] = torch.from_numpy(weights[gemm.input[2]].copy())
    return state


def real_patches(limit: int = 256) -> np.ndarray:
    """Up to ``limit`` full-size 50x50 patches of the dataset, both classes."""
    from PIL import Image

    # Every fourth patient's patches, both classes, so several slides and stains take part.
    patients = sorted(DATA.iterdir())[::4]
    paths = [path for patient in patients for path in sorted(patient.glob("[01]/*.png"))[:8]]
    patches = []
    for path in paths:
        image = np.asarray(Image.open(path).convert("RGB"))
        if image.shape == (50, 50, 3):
            patches.append(image)
        if len(patches) == limit:
            break
    if not patches:
        raise SystemExit(f"no patches found under {DATA}")
    return np.stack(patches)


def max_logit_difference(model_dir: Path, patches: np.ndarray) -> float:
    """Max abs difference between torch's and ONNX Runtime's logits on ``patches``."""
    import onnxruntime
    import torch

    from bcd.algorithms import load_model

    spec = json.loads((model_dir / "model.json").read_text())["input"]
    images = (patches.astype(np.float32) / spec["scale"] - spec["mean"]) / spec["std"]
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    session = onnxruntime.InferenceSession(
        str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (onnx_logits,) = session.run(None, {session.get_inputs()[0].name: images})
    with torch.no_grad():
        torch_logits = load_model(model_dir)(torch.from_numpy(images)).numpy()
    return float(np.abs(onnx_logits - torch_logits).max())


def main() -> int:
    """Build (or with ``--check`` only verify) the bundled model's ``model.pt``."""
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only, write nothing")
    args = parser.parse_args()
    patches = real_patches()
    target = BUNDLED / "model.pt"
    if not args.check:
        torch.save(state_dict_from_onnx(BUNDLED / "model.onnx"), target)
    difference = max_logit_difference(BUNDLED, patches)
    print(f"{len(patches)} real patches: max |torch - onnxruntime| logit = {difference:.2e}")
    if difference >= TOLERANCE:
        if not args.check:
            target.unlink()
        print(f"over the tolerance {TOLERANCE:g}; model.pt not kept", file=sys.stderr)
        return 1
    print(f"{target} ({target.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
