"""The networks behind the built-in algorithms. Every model returns logits.

- ``cnn``: with ``architecture=original`` (the default) :class:`SmallCNN`,
  the small network of the original custom TensorFlow script (conv → pool →
  conv → pool → dense → logits); with ``architecture=deep``
  :class:`DeepCNN`, five 3×3 conv + batch-norm layers and global average
  pooling — a ninth of the parameters and slightly cheaper to serve.
- ``image-classification``: torchvision ResNets (18/34/50/101/152 layers)
  with a stem chosen for 50×50 patches. torchvision's ImageNet stem (7×7
  stride-2 conv, then a stride-2 max-pool) shrinks a 50×50 patch to 13×13
  before the first residual stage and to 2×2 at the last, throwing away most of
  the cell-level detail a patch holds. bcd replaces it:

  ========== ======================================== ======================
  ``stem``   first layers                             feature maps (stage 1→4)
  ========== ======================================== ======================
  compact    3×3 conv, stride 2; no max-pool (default) 25, 13, 7, 4
  full       3×3 conv, stride 1; no max-pool           50, 25, 13, 7
  imagenet   torchvision's 7×7 stride 2 + max-pool     13, 7, 4, 2
  ========== ======================================== ======================

  ``full`` keeps all detail at about 3–4× the compute of ``compact``;
  ``imagenet`` is the cheapest and the only stem that reuses ImageNet's first
  layer unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bcd.algorithms._hyperparameters import image_shape_tuple
from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """conv(3×3, 32) → pool → conv(3×3, 64) → pool → dense(128) → dropout → logits.

    The layout of the original custom TensorFlow script; about 1.2 M
    parameters, most of them in the dense layer.

    Args:
        num_classes: Number of output logits.
        image_size: (height, width) of the input.
        dropout: Dropout probability before the logits.
        hidden: Width of the dense layer.
    """

    def __init__(
        self,
        num_classes: int = 2,
        image_size: tuple[int, int] = (50, 50),
        dropout: float = 0.4,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        height, width = image_size
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1),  # (N, 32, H, W)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, 32, H/2, W/2)
            nn.Conv2d(32, 64, kernel_size=3, padding=1),  # (N, 64, H/2, W/2)
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),  # (N, 64, H/4, W/4)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 64 · H/4 · W/4)
            nn.Linear(64 * (height // 4) * (width // 4), hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),  # (N, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images → (N, num_classes) logits."""
        return self.classifier(self.features(images))


def _conv_bn(in_channels: int, out_channels: int) -> list[nn.Module]:
    """3×3 conv (same padding, no bias) → batch norm → ReLU."""
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DeepCNN(nn.Module):
    """Five 3×3 conv + batch-norm layers, global average pooling, dropout, logits.

    Layout for a 50×50 patch: conv 16 @50 → pool → conv 32 @25 → pool →
    conv 64, conv 64 @12 → pool → conv 128 @6 → global average → logits.
    About 135 k parameters and 29 MFLOPs per patch — no more compute than
    :class:`SmallCNN`, but deeper, normalised and without the large dense
    layer that lets the small network memorise training patches. Global
    pooling makes it accept any input size.

    Args:
        num_classes: Number of output logits.
        dropout: Dropout probability before the logits.
        widths: Channels of the five conv layers.
    """

    def __init__(
        self,
        num_classes: int = 2,
        dropout: float = 0.4,
        widths: tuple[int, int, int, int, int] = (16, 32, 64, 64, 128),
    ) -> None:
        super().__init__()
        first, second, third, fourth, fifth = widths
        self.features = nn.Sequential(
            *_conv_bn(3, first),  # (N, 16, H, W)
            nn.MaxPool2d(2),  # (N, 16, H/2, W/2)
            *_conv_bn(first, second),  # (N, 32, H/2, W/2)
            nn.MaxPool2d(2),  # (N, 32, H/4, W/4)
            *_conv_bn(second, third),  # (N, 64, H/4, W/4)
            *_conv_bn(third, fourth),  # (N, 64, H/4, W/4)
            nn.MaxPool2d(2),  # (N, 64, H/8, W/8)
            *_conv_bn(fourth, fifth),  # (N, 128, H/8, W/8)
            nn.AdaptiveAvgPool2d(1),  # (N, 128, 1, 1)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),  # (N, 128)
            nn.Dropout(dropout),
            nn.Linear(fifth, num_classes),  # (N, num_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images → (N, num_classes) logits."""
        return self.classifier(self.features(images))


def _resnet_builder(num_layers: int) -> Any:
    from torchvision.models import resnet

    builders = {
        18: resnet.resnet18,
        34: resnet.resnet34,
        50: resnet.resnet50,
        101: resnet.resnet101,
        152: resnet.resnet152,
    }
    if num_layers not in builders:
        raise InvalidInputError(
            f"num_layers={num_layers} is not a ResNet depth; valid: "
            f"{', '.join(str(depth) for depth in builders)}"
        )
    return builders[num_layers]


def build_resnet(num_layers: int = 18, num_classes: int = 2, stem: str = "compact") -> nn.Module:
    """A torchvision ResNet with a stem for small patches (see the module doc).

    Args:
        num_layers: 18, 34, 50, 101 or 152.
        num_classes: Number of output logits.
        stem: ``"compact"``, ``"full"`` or ``"imagenet"``.

    Returns:
        The model, randomly initialised.

    Raises:
        InvalidInputError: For an unknown depth or stem.
    """
    model = _resnet_builder(num_layers)(weights=None, num_classes=num_classes)
    if stem == "imagenet":
        return model
    if stem not in ("compact", "full"):
        raise InvalidInputError(f"unknown stem {stem!r}; valid: compact, full, imagenet")
    stride = 2 if stem == "compact" else 1
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=stride, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def load_pretrained(model: nn.Module, path: str | Path) -> None:
    """Load torchvision ImageNet weights from a local file into a bcd ResNet.

    The classifier (``fc``) is skipped (it has 1000 ImageNet classes). With a
    3×3 stem the central 3×3 of each pretrained 7×7 first-layer kernel is kept.

    Args:
        model: A model from :func:`build_resnet` of the same depth.
        path: A ``.pth`` state dict (or a dict holding one under ``state_dict``).

    Raises:
        InvalidInputError: If the file is missing, unreadable, or does not
            match the architecture (the message names the mismatched keys).
    """
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(
            f"pretrained weights {str(path)!r} not found; copy torchvision's ImageNet "
            "state dict file there (bcd never downloads weights)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InvalidInputError(
            f"cannot read pretrained weights {str(path)!r}: {error}. It must be a torch "
            "state dict saved with torch.save (loaded with weights_only=True)"
        ) from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise InvalidInputError(f"pretrained weights {str(path)!r} do not hold a state dict")
    own = model.state_dict()
    kept: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("fc."):
            continue
        if key == "conv1.weight" and key in own and tensor.shape != own[key].shape:
            tensor = _center_crop_kernel(tensor, own[key].shape[-1])
        kept[key] = tensor
    expected = {key for key in own if not key.startswith("fc.")}
    missing = sorted(expected - set(kept))
    unexpected = sorted(set(kept) - expected)
    mismatched = sorted(key for key in expected & set(kept) if kept[key].shape != own[key].shape)
    if missing or unexpected or mismatched:
        raise InvalidInputError(
            f"pretrained weights {str(path)!r} do not fit this ResNet: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {mismatched[:5]}; "
            "use torchvision's ImageNet weights for the same num_layers"
        )
    model.load_state_dict(kept, strict=False)
    logger.info("loaded pretrained weights for %d tensors", len(kept))


def _center_crop_kernel(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """(O, I, k, k) → (O, I, size, size), the central window."""
    start = (kernel.shape[-1] - size) // 2
    return kernel[..., start : start + size, start : start + size].contiguous()


class UpsampledInput(nn.Module):
    """Resize the input to the network's resolution, inside the network (and its ONNX graph).

    Serving keeps sending 50×50 patches; the network sees ``size`` (bilinear).
    ImageNet-pretrained networks work best near the resolution they were trained at.

    Args:
        network: The classifier.
        size: (height, width) it expects.
    """

    def __init__(self, network: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.network = network
        self.size = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, h, w) → resized to (N, 3, H, W) → (N, num_classes) logits."""
        resized = nn.functional.interpolate(
            images, size=self.size, mode="bilinear", align_corners=False
        )
        return self.network(resized)


# The packed patch size; an ``image_shape`` other than this makes the network resize.
NATIVE_SIZE = (50, 50)


def backbone_stages(model: nn.Module) -> list[nn.Module]:
    """The stages ``freeze_layers`` counts: stem first, classifier never.

    Args:
        model: A network from :func:`build_model` (possibly upsampled).

    Returns:
        ResNet: [stem (conv1 + bn1), layer1 … layer4]; EfficientNet-Lite: its
        nine ``features`` entries; other networks: an empty list.
    """
    from bcd.algorithms.efficientnet import EfficientNetLite

    network = model.network if isinstance(model, UpsampledInput) else model
    if isinstance(network, EfficientNetLite):
        return list(network.features)
    names = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    parts = [getattr(network, name, None) for name in names]
    if not all(isinstance(part, nn.Module) for part in parts):
        return []
    modules = [part for part in parts if isinstance(part, nn.Module)]
    return [nn.ModuleList(modules[:2]), *modules[2:]]


def freeze_stages(model: nn.Module, count: int) -> int:
    """Stop gradients through the first ``count`` backbone stages.

    Batch-norm layers in them keep updating their running statistics, so
    train-time and eval-time normalisation agree on the new tissue.

    Returns:
        The number of parameters frozen.
    """
    frozen = 0
    for stage in backbone_stages(model)[:count]:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
            frozen += parameter.numel()
    return frozen


def classifier_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of the final classification layer (``fc`` or ``classifier``)."""
    network = model.network if isinstance(model, UpsampledInput) else model
    head = getattr(network, "fc", None) or getattr(network, "classifier", None)
    return list(head.parameters()) if isinstance(head, nn.Module) else []


def _image_classification_network(hyperparameters: Mapping[str, Any]) -> nn.Module:
    num_classes = int(hyperparameters["num_classes"])
    architecture = hyperparameters.get("architecture", "resnet")
    pretrained = bool(hyperparameters["use_pretrained_model"])
    if architecture == "resnet":
        model = build_resnet(
            int(hyperparameters["num_layers"]), num_classes, hyperparameters["stem"]
        )
        if pretrained:
            load_pretrained(model, hyperparameters["pretrained_weights"])
        return model
    from bcd.algorithms.efficientnet import EfficientNetLite, load_imagenet_weights

    network = EfficientNetLite(architecture, num_classes)
    if pretrained:
        load_imagenet_weights(network, hyperparameters["pretrained_weights"] or None)
    return network


def build_model(algorithm: str, hyperparameters: Mapping[str, Any]) -> nn.Module:
    """The network of a built-in algorithm, from validated hyperparameters.

    An ``image_shape`` other than the packed 50×50 wraps the network in
    :class:`UpsampledInput`, so it still takes 50×50 patches. ``freeze_layers``
    is applied here.

    Args:
        algorithm: ``"cnn"`` or ``"image-classification"``.
        hyperparameters: Output of ``Algorithm.validate_hyperparameters``.

    Returns:
        The model (pretrained weights loaded when asked for).

    Raises:
        InvalidInputError: For an unknown algorithm or unusable weights.
    """
    _, height, width = image_shape_tuple(hyperparameters["image_shape"])
    num_classes = int(hyperparameters["num_classes"])
    model: nn.Module
    if algorithm == "cnn":
        dropout = float(hyperparameters["dropout"])
        if hyperparameters.get("architecture", "original") == "deep":
            model = DeepCNN(num_classes, dropout)
        else:
            model = SmallCNN(num_classes, (height, width), dropout)
    elif algorithm == "image-classification":
        model = _image_classification_network(hyperparameters)
        freeze_stages(model, int(hyperparameters.get("freeze_layers", 0)))
    else:
        raise InvalidInputError(
            f"no built-in network for algorithm {algorithm!r}; valid: cnn, image-classification"
        )
    if (height, width) != NATIVE_SIZE:
        model = UpsampledInput(model, (height, width))
    return model
