"""Model artifacts: ``model.onnx``, ``model.pt`` and ``model.json`` in SM_MODEL_DIR.

``model.onnx`` takes ``images`` (N, 3, H, W) float32 normalised as
``(pixel / 255 - mean) / std`` with a dynamic batch axis and returns
``logits`` (N, num_classes). Each file is written aside and renamed;
``model.json`` is written last, so its presence means the set is complete.
Its layout is fixed in ``docs/architecture.md``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bcd
from bcd.algorithms._hyperparameters import image_shape_tuple
from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "logits"
#: Largest tolerated |ONNX − torch| logit difference before export fails.
PARITY_TOLERANCE = 1e-3
CLASS_NAMES_IDC = ["no IDC", "IDC"]


def class_names(num_classes: int) -> list[str]:
    """``["no IDC", "IDC"]`` for two classes, else ``["class 0", ...]``."""
    if num_classes == 2:
        return list(CLASS_NAMES_IDC)
    return [f"class {index}" for index in range(num_classes)]


def write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(temporary)`` then rename the temporary file to ``path``."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """Export ``model`` (eval mode, CPU) to ONNX with a dynamic batch axis.

    Args:
        model: The network; returns logits.
        sample: (N, 3, H, W) float32 example input.
        path: Where to write ``model.onnx`` (atomically).
    """

    def write(temporary: Path) -> None:
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated but exact, fast and keeps opset 17.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (sample,),
                str(temporary),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=ONNX_OPSET,
                dynamo=False,
            )

    write_atomically(path, write)


def onnx_parity(onnx_path: Path, model: nn.Module, batch: torch.Tensor) -> float:
    """Max |ONNX Runtime − torch| over the logits of ``batch``.

    Args:
        onnx_path: The exported model.
        model: The torch model (eval mode, CPU).
        batch: (N, 3, H, W) float32 normalised images.

    Returns:
        The largest absolute difference.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    with torch.no_grad():
        expected = model(batch).numpy()
    actual = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})[0]
    return float(np.max(np.abs(actual - expected)))


def onnx_section(difference: float, batch_size: int) -> dict[str, Any]:
    """The ``onnx`` and ``weights`` entries of a ``model.json``.

    Args:
        difference: Largest absolute logit difference between ONNX and torch.
        batch_size: Patches that difference was measured on.
    """
    return {
        "onnx": {
            "file": "model.onnx",
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "opset": ONNX_OPSET,
            "parity_max_abs_diff": difference,
            "parity_batch_size": batch_size,
        },
        "weights": {"file": "model.pt", "format": "torch state dict (weights_only)"},
    }


def write_artifacts(
    model_dir: Path,
    model: nn.Module,
    *,
    algorithm: str,
    hyperparameters: Mapping[str, Any],
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    parity_batch: torch.Tensor,
    metrics: Mapping[str, Any],
    dataset: Mapping[str, Any],
    training: Mapping[str, Any] | None = None,
    stain_normalization: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model.pt``, ``model.onnx`` and ``model.json``.

    Args:
        model_dir: ``SM_MODEL_DIR``.
        model: The chosen (best-epoch) network, unwrapped from DDP.
        algorithm: Algorithm name.
        hyperparameters: The validated hyperparameters.
        mean: Input normalisation means (0–1 scale), from the training split.
        std: Input normalisation stds (0–1 scale).
        parity_batch: (N, 3, H, W) normalised images to compare ONNX and torch on.
        metrics: ``{"best_epoch", "best", "final"}``.
        dataset: ``{"name", "fingerprint", ...}``.
        training: Extra facts (epochs run, epoch times, world size).
        stain_normalization: The fitted reference stain
            (:meth:`bcd.stain.StainNormalizer.to_json`), written as
            ``input.stain_normalization``; ``None`` when off.

    Returns:
        The ``model.json`` content.

    Raises:
        InvalidInputError: If ONNX and torch disagree beyond the tolerance.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    write_atomically(model_dir / "model.pt", lambda temporary: torch.save(state, temporary))
    onnx_path = model_dir / "model.onnx"
    export_onnx(model, parity_batch[:2], onnx_path)
    difference = onnx_parity(onnx_path, model, parity_batch)
    if not difference <= PARITY_TOLERANCE:
        raise InvalidInputError(
            f"ONNX export disagrees with torch by {difference:.3g} on a batch "
            f"(tolerance {PARITY_TOLERANCE}); the model cannot be served faithfully"
        )
    description = {
        "format_version": 1,
        "algorithm": algorithm,
        "hyperparameters": dict(hyperparameters),
        "input": {
            # What the ONNX graph takes; a network at another resolution resizes inside.
            "shape": [int(size) for size in parity_batch.shape[1:]],
            "network_shape": list(image_shape_tuple(hyperparameters["image_shape"])),
            "layout": "NCHW",
            "dtype": "float32",
            "scale": 255.0,
            "mean": [float(value) for value in mean],
            "std": [float(value) for value in std],
            "pad_value": 255,
            **({"stain_normalization": dict(stain_normalization)} if stain_normalization else {}),
        },
        "class_names": class_names(int(hyperparameters["num_classes"])),
        "temperature": 1.0,
        **onnx_section(difference, int(parity_batch.shape[0])),
        "metrics": _finite(dict(metrics)),
        "dataset": dict(dataset),
        "training": _finite(dict(training or {})),
        "bcd_version": bcd.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(description, indent=2, allow_nan=False)
    write_atomically(model_dir / "model.json", lambda temporary: temporary.write_text(text))
    logger.info("wrote model artifacts (ONNX parity max abs diff %.2e)", difference)
    return description


def load_model(model_dir: str | Path, map_location: str = "cpu") -> nn.Module:
    """Rebuild a built-in algorithm's network from ``model.json`` + ``model.pt``.

    Args:
        model_dir: A folder holding the two files.
        map_location: Device for the weights.

    Returns:
        The network in eval mode; it expects normalised input (see ``model.json``).

    Raises:
        InvalidInputError: If a file is missing or unreadable, or the algorithm
            is not a built-in one.
    """
    from bcd.algorithms.models import build_model

    folder = Path(model_dir)
    try:
        description = json.loads((folder / "model.json").read_text())
        state = torch.load(folder / "model.pt", map_location=map_location, weights_only=True)
    except FileNotFoundError as error:
        raise InvalidInputError(
            f"{str(folder)!r} is not a bcd model folder: {error.filename} is missing"
        ) from None
    except Exception as error:
        raise InvalidInputError(f"cannot read the model in {str(folder)!r}: {error}") from None
    model: nn.Module
    if description.get("algorithm") == "ensemble":
        from bcd.algorithms.ensemble import build_ensemble

        model = build_ensemble(description)
    else:
        hyperparameters = dict(description["hyperparameters"])
        hyperparameters["use_pretrained_model"] = False
        model = build_model(description["algorithm"], hyperparameters)
    model.load_state_dict(state)
    return model.eval()


def _finite(value: Any) -> Any:
    """Replace NaN/inf floats by ``None`` so the JSON stays standard."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
