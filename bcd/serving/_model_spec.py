"""``model.json``: what serving needs to know about a model folder.

The file is written by training (see docs/architecture.md); this module reads
and checks it, so a bad folder fails at load time with a message that names
the field, never at the first request.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcd.errors import InvalidInputError, NotFoundError
from bcd.neighbourhood import SlideContext, parse_slide_context
from bcd.stain import StainNormalizer

MODEL_JSON = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    """The parts of ``model.json`` serving uses.

    Attributes:
        directory: The model folder.
        onnx_path: The ONNX file inside it.
        input_name: Name of the graph's image input.
        output_name: Name of the graph's logits output.
        channels: Input channels (3).
        height: Input height in pixels.
        width: Input width in pixels.
        scale: Pixels are divided by this first (255.0).
        mean: Per-channel mean on the 0–1 scale.
        std: Per-channel standard deviation on the 0–1 scale.
        pad_value: Pixel value used to pad patches smaller than the input.
        class_names: One name per logit.
        temperature: Logits are divided by this before the softmax.
        logit_bias: Added to the IDC logit after the temperature (Platt
            scaling): ``P(IDC) = sigmoid((z1 − z0) / T + b)``.
        decision_threshold: Cancer is detected when ``P(IDC) >= this``.
        tta: Whether test-time augmentation is on by default.
        algorithm: The algorithm that trained the model.
        slide_context: How whole-slide analysis combines a tile's score with
            its neighbours' (:mod:`bcd.neighbourhood`); ``None`` when not fitted.
        stain: The reference stain every patch is mapped onto before scaling
            (:mod:`bcd.stain`, ``input.stain_normalization``); ``None`` when off.
    """

    directory: Path
    onnx_path: Path
    input_name: str
    output_name: str
    channels: int
    height: int
    width: int
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad_value: int
    class_names: tuple[str, ...]
    temperature: float
    tta: bool
    algorithm: str
    logit_bias: float = 0.0
    decision_threshold: float = 0.5
    slide_context: SlideContext | None = None
    stain: StainNormalizer | None = None


def _field(document: dict[str, Any], path: str, expected: type | tuple[type, ...]) -> Any:
    value: Any = document
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            raise InvalidInputError(f"model.json has no {path!r}; re-export the model")
        value = value[key]
    if not isinstance(value, expected):
        raise InvalidInputError(f"model.json field {path!r} has the wrong type: {value!r}")
    return value


def load_model_spec(directory: Path | str) -> ModelSpec:
    """Read and check ``model.json`` in a model folder.

    Args:
        directory: A local folder holding ``model.json`` and the ONNX file it names.

    Returns:
        The parsed :class:`ModelSpec`.

    Raises:
        NotFoundError: The folder, ``model.json`` or the ONNX file is missing.
        InvalidInputError: ``model.json`` is not valid JSON or a field is wrong.
    """
    directory = Path(directory)
    path = directory / MODEL_JSON
    if not path.is_file():
        raise NotFoundError(f"no {MODEL_JSON} in model folder {directory}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"{path} is not readable JSON: {error}") from error
    if not isinstance(document, dict):
        raise InvalidInputError(f"{path} must hold a JSON object")

    shape = _field(document, "input.shape", list)
    layout = document.get("input", {}).get("layout", "NCHW")
    if layout != "NCHW" or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise InvalidInputError(
            f"model.json input must be NCHW with shape [C, H, W]; got {layout} {shape}"
        )
    channels, height, width = shape
    if channels != 3:
        raise InvalidInputError(f"model.json input has {channels} channels; serving needs 3 (RGB)")
    mean = tuple(float(v) for v in _field(document, "input.mean", list))
    std = tuple(float(v) for v in _field(document, "input.std", list))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InvalidInputError("model.json input.mean and input.std need 3 values, std > 0")
    onnx_file = _field(document, "onnx.file", str)
    onnx_path = directory / onnx_file
    if not onnx_path.is_file():
        raise NotFoundError(f"model.json names {onnx_file!r} but {onnx_path} does not exist")
    class_names = tuple(str(v) for v in document.get("class_names", ["no IDC", "IDC"]))
    if len(class_names) != 2:
        raise InvalidInputError(f"model.json class_names must name 2 classes, got {class_names}")
    temperature = float(document.get("temperature", 1.0))
    if not temperature > 0:
        raise InvalidInputError(f"model.json temperature must be > 0, got {temperature}")
    logit_bias = document.get("logit_bias", 0.0)
    if isinstance(logit_bias, bool) or not isinstance(logit_bias, int | float):
        raise InvalidInputError(f"model.json logit_bias must be a number, got {logit_bias!r}")
    if not abs(logit_bias) < 1e6:
        raise InvalidInputError(f"model.json logit_bias must be finite, got {logit_bias}")
    threshold = document.get("decision_threshold", 0.5)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not 0.0 < threshold < 1.0
    ):
        raise InvalidInputError(
            f"model.json decision_threshold must be a number in (0, 1), got {threshold!r}"
        )
    scale = float(document["input"].get("scale", 255.0))
    pad_value = int(document["input"].get("pad_value", 255))
    if not 0 <= pad_value <= 255 or scale <= 0:
        raise InvalidInputError("model.json input.pad_value must be 0–255 and scale > 0")
    return ModelSpec(
        directory=directory,
        onnx_path=onnx_path,
        input_name=str(document["onnx"].get("input_name", "images")),
        output_name=str(document["onnx"].get("output_name", "logits")),
        channels=channels,
        height=height,
        width=width,
        scale=scale,
        mean=mean,
        std=std,
        pad_value=pad_value,
        class_names=class_names,
        temperature=temperature,
        tta=bool(document.get("tta", False)),
        algorithm=str(document.get("algorithm", "unknown")),
        logit_bias=float(logit_bias),
        decision_threshold=float(threshold),
        slide_context=parse_slide_context(document.get("slide_context")),
        stain=StainNormalizer.from_json(document["input"].get("stain_normalization")),
    )
