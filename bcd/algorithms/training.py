"""Training as plain functions: one epoch, evaluation, optimiser, schedule, selection.

The entry point :mod:`bcd.algorithms.train` strings these together under the
training job contract; they work just as well in a notebook on in-memory data
(:meth:`bcd.algorithms.channels.ChannelData.from_arrays`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from bcd.algorithms.augment import BatchAugmenter, normalize
from bcd.algorithms.channels import BatchLoader, ChannelData
from bcd.algorithms.distillation import Distillation
from bcd.algorithms.metrics import MINIMIZED_METRICS, classification_metrics
from bcd.errors import InvalidInputError

OPTIMIZERS = ("sgd", "adam", "rmsprop", "nag")


def make_optimizer(
    name: str,
    parameters: Iterable[nn.Parameter] | list[dict[str, Any]],
    hyperparameters: Mapping[str, Any],
) -> torch.optim.Optimizer:
    """The optimiser ``name`` configured from SageMaker-named hyperparameters.

    Args:
        name: ``sgd``, ``adam``, ``rmsprop`` or ``nag`` (SGD with Nesterov momentum).
        parameters: The model's parameters, or parameter groups (dicts with
            ``params`` and an ``lr_scale`` that :func:`set_learning_rate` applies).
        hyperparameters: ``learning_rate``, ``momentum``, ``weight_decay``,
            ``beta_1``, ``beta_2``, ``eps``, ``gamma``.

    Returns:
        The optimiser.

    Raises:
        InvalidInputError: For an unknown name; the message lists the valid ones.
    """
    rate = float(hyperparameters["learning_rate"])
    decay = float(hyperparameters["weight_decay"])
    momentum = float(hyperparameters["momentum"])
    given: list[Any] = list(parameters)
    if given and isinstance(given[0], dict):
        groups = [
            {**group, "lr": rate * group.get("lr_scale", 1.0)} for group in given if group["params"]
        ]
        flat = [parameter for group in groups for parameter in group["params"]]
        return _optimizer(name, groups, flat, rate, decay, momentum, hyperparameters)
    return _optimizer(name, given, given, rate, decay, momentum, hyperparameters)


def parameter_groups(model: nn.Module, backbone_factor: float) -> list[dict[str, Any]]:
    """Trainable parameters split for discriminative learning rates.

    Args:
        model: The network.
        backbone_factor: Learning-rate scale of everything but the classifier.

    Returns:
        ``[{"params": backbone, "lr_scale": factor}, {"params": classifier, "lr_scale": 1}]``,
        frozen parameters left out.
    """
    from bcd.algorithms.models import classifier_parameters

    head_ids = {id(parameter) for parameter in classifier_parameters(model)}
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return [
        {
            "params": [p for p in trainable if id(p) not in head_ids],
            "lr_scale": backbone_factor,
        },
        {"params": [p for p in trainable if id(p) in head_ids], "lr_scale": 1.0},
    ]


def _optimizer(
    name: str,
    parameters: list[Any],
    flat: list[nn.Parameter],
    rate: float,
    decay: float,
    momentum: float,
    hyperparameters: Mapping[str, Any],
) -> torch.optim.Optimizer:
    if name in ("sgd", "nag"):
        return torch.optim.SGD(
            parameters,
            lr=rate,
            momentum=momentum,
            weight_decay=decay,
            nesterov=name == "nag" and momentum > 0,
            **_update_kernel(flat, fused_exists=True),
        )
    if name == "adam":
        betas = (float(hyperparameters["beta_1"]), float(hyperparameters["beta_2"]))
        return torch.optim.Adam(
            parameters,
            lr=rate,
            betas=betas,
            eps=float(hyperparameters["eps"]),
            weight_decay=decay,
            **_update_kernel(flat, fused_exists=True),
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(
            parameters,
            lr=rate,
            alpha=float(hyperparameters["gamma"]),
            eps=float(hyperparameters["eps"]),
            momentum=momentum,
            weight_decay=decay,
            **_update_kernel(flat, fused_exists=False),
        )
    raise InvalidInputError(
        f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}"
    )


def _update_kernel(parameters: list[nn.Parameter], fused_exists: bool) -> dict[str, bool]:
    """How the optimiser applies its update: ``fused=True`` or ``foreach=True``.

    torch's default on the CPU is a loop of several element-wise ops per
    parameter tensor; the fused kernel does the whole update in one pass
    (measured 15 ms → 3 ms per Adam step for the 1.2 M-parameter ``cnn`` on one
    core), and the multi-tensor ``foreach`` path sits in between. Fused kernels
    exist for Adam and SGD on float parameters on the CPU and CUDA.
    """
    fusable = all(
        parameter.is_floating_point() and parameter.device.type in ("cpu", "cuda")
        for parameter in parameters
    )
    return {"fused": True} if fused_exists and fusable else {"foreach": True}


def input_memory_format(device: torch.device) -> torch.memory_format:
    """The memory layout of the image batches the trainer feeds a model on ``device``.

    channels_last (NHWC) on the CPU: oneDNN's NHWC convolution and pooling
    kernels, forward and backward, make the ``cnn`` training step about 20 %
    faster than NCHW input at 50×50 on this project's CPUs, and the packed
    patches are NHWC to begin with. NCHW elsewhere. Only the inputs change
    layout; weights, checkpoints and the ONNX export stay NCHW.
    """
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def learning_rate_at(epoch: int, hyperparameters: Mapping[str, Any]) -> float:
    """The learning rate for 0-based ``epoch``.

    ``step`` multiplies the rate by ``lr_scheduler_factor`` at each epoch listed
    in ``lr_scheduler_step`` (SageMaker's meaning: from that epoch on);
    ``cosine`` anneals from the initial rate to zero over ``epochs``; ``none``
    keeps it constant.
    """
    base = float(hyperparameters["learning_rate"])
    schedule = hyperparameters["lr_scheduler"]
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * epoch / int(hyperparameters["epochs"])))
    if schedule == "step" and hyperparameters["lr_scheduler_step"]:
        steps = [int(step) for step in str(hyperparameters["lr_scheduler_step"]).split(",")]
        passed = sum(1 for step in steps if epoch >= step)
        return base * float(hyperparameters["lr_scheduler_factor"]) ** passed
    return base


def set_learning_rate(optimizer: torch.optim.Optimizer, rate: float) -> None:
    """Set every parameter group's learning rate (times the group's ``lr_scale``)."""
    for group in optimizer.param_groups:
        group["lr"] = rate * group.get("lr_scale", 1.0)


class TrainingDivergedError(InvalidInputError):
    """The training loss or the gradients became NaN or infinite.

    Args:
        epoch: 1-based epoch in which it happened.
        loss: The offending loss value.
    """

    def __init__(self, epoch: int, loss: float) -> None:
        super().__init__(
            f"training diverged at epoch {epoch} (loss {loss}); lower learning_rate, "
            "or use warmup_epochs and gradient_clip_norm"
        )
        self.epoch = epoch
        self.loss = loss


@dataclass(frozen=True)
class StepControl:
    """Per-batch learning-rate warm-up and gradient clipping.

    Attributes:
        base_rate: This epoch's scheduled learning rate.
        warmup_steps: Batches over which the rate rises linearly from 0.
        first_step: Global index of this epoch's first batch.
        clip_norm: Global gradient L2 norm limit; 0 = no clipping.
    """

    base_rate: float
    warmup_steps: int = 0
    first_step: int = 0
    clip_norm: float = 0.0

    def rate(self, batch: int) -> float | None:
        """The rate for batch ``batch`` of this epoch, or None once warm-up is over."""
        step = self.first_step + batch
        if step >= self.warmup_steps:
            return None
        return self.base_rate * (step + 1) / self.warmup_steps


def class_weights(setting: str, labels: np.ndarray, num_classes: int) -> torch.Tensor | None:
    """Loss weights per class.

    Args:
        setting: ``balanced`` (``N / (C · count_c)``: the 2:1 no-IDC:IDC
            imbalance weighs IDC twice), ``none``, or explicit ``"w0,w1"``.
        labels: (N,) training labels.
        num_classes: C.

    Returns:
        (C,) float32 weights, or ``None`` for unweighted.
    """
    if setting == "none":
        return None
    if setting != "balanced":
        return torch.tensor([float(part) for part in setting.split(",")], dtype=torch.float32)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    # A class missing from the training split gets weight 1 rather than infinity.
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(weights, dtype=torch.float32)


def training_loss(
    hyperparameters: dict[str, Any], labels: np.ndarray, num_classes: int
) -> nn.CrossEntropyLoss:
    """The training criterion: cross-entropy with ``class_weights`` and ``label_smoothing``.

    Label smoothing moves ``label_smoothing`` of each target's weight evenly
    onto all classes, so the loss stops pushing towards certainty on labels
    drawn as coarse regions. Validation metrics use the hard labels.

    Args:
        hyperparameters: Validated hyperparameters of a built-in algorithm.
        labels: (N,) training labels (for ``class_weights=balanced``).
        num_classes: C.
    """
    return nn.CrossEntropyLoss(
        weight=class_weights(str(hyperparameters["class_weights"]), labels, num_classes),
        label_smoothing=float(hyperparameters.get("label_smoothing", 0.0)),
    )


@dataclass
class EpochResult:
    """What one training epoch did on this process (sums all-reduced when distributed)."""

    loss: float
    accuracy: float
    images: int
    seconds: float
    stopped: bool = False

    @property
    def throughput(self) -> float:
        """Training images per second, all processes together."""
        return self.images / self.seconds if self.seconds > 0 else 0.0


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    criterion: nn.Module,
    loader: BatchLoader,
    epoch: int,
    *,
    augmenter: BatchAugmenter,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    should_stop: Callable[[], bool] = lambda: False,
    mixup_alpha: float = 0.0,
    control: StepControl | None = None,
    distillation: Distillation | None = None,
) -> EpochResult:
    """Run one pass over this process's share of the training data.

    Args:
        model: The network (possibly wrapped in DistributedDataParallel).
        optimizer: Its optimiser.
        criterion: Cross-entropy (class-weighted) with mean reduction.
        loader: Batches for this rank.
        epoch: 0-based epoch, seeds the shuffle.
        augmenter: Training augmentation.
        mean: (3,) normalisation means on ``device``.
        std: (3,) normalisation stds on ``device``.
        device: Where to compute.
        should_stop: Polled after every batch; when it returns true the epoch
            ends early with ``stopped=True``. Under ``torch.distributed`` it must
            agree across ranks (see :func:`bcd.algorithms.train`).
        mixup_alpha: When > 0, every batch is blended with a shuffled copy of
            itself (mixup): ``λ · x + (1 − λ) · x[perm]`` with
            ``λ ~ Beta(α, α)``, and the loss is blended the same way, so no
            target is ever fully certain. Accuracy is counted against the
            batch's own labels. Drawn from torch's global generator, which the
            trainer seeds per epoch.
        control: Per-batch warm-up of the learning rate and gradient clipping.
        distillation: The teacher's cached logits and the soft-target weighting.

    Returns:
        Mean loss and accuracy over the images seen, their count and the time.

    Raises:
        TrainingDivergedError: When a batch's loss is NaN or infinite.
    """
    model.train()
    layout = input_memory_format(device)
    weights = getattr(criterion, "weight", None)
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss·w, w, correct, n
    stopped = False
    mixing = torch.distributions.Beta(mixup_alpha, mixup_alpha) if mixup_alpha > 0 else None
    started = time.perf_counter()
    for batch, (images, labels, rows) in enumerate(loader.indexed_batches(epoch)):
        warm_rate = control.rate(batch) if control is not None else None
        if warm_rate is not None:
            set_learning_rate(optimizer, warm_rate)
        elif control is not None and batch == 0:
            set_learning_rate(optimizer, control.base_rate)
        with _data_threads(device):
            images = augmenter.geometric(images.to(device, non_blocking=True))  # (B,3,h,w) uint8
            labels = labels.to(device, non_blocking=True)
            inputs = normalize(augmenter.photometric(images.float()), mean, std)
            if mixing is not None:
                share = float(mixing.sample())
                partners = torch.randperm(labels.numel(), device=device)
                inputs = share * inputs + (1 - share) * inputs[partners]
            inputs = inputs.contiguous(memory_format=layout)  # (B, 3, h, w) float32
        logits = model(inputs)  # (B, C)
        if mixing is not None:
            loss = share * criterion(logits, labels) + (1 - share) * criterion(
                logits, labels[partners]
            )
        else:
            loss = criterion(logits, labels)
        if distillation is not None:
            teacher = distillation.teacher_logits[rows.to(device)]  # (B, C)
            if mixing is not None:
                loss = share * distillation.loss(logits, loss, teacher) + (
                    1 - share
                ) * distillation.loss(logits, loss, teacher[partners])
            else:
                loss = distillation.loss(logits, loss, teacher)
        if not math.isfinite(value := float(loss.detach())):
            raise TrainingDivergedError(epoch + 1, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if control is not None and control.clip_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), control.clip_norm)
        optimizer.step()
        with torch.no_grad():
            weight = (
                weights[labels].sum()
                if weights is not None
                else labels.new_tensor(labels.numel(), dtype=torch.float64)
            )
            totals += torch.stack(
                [
                    loss.detach().double() * weight,
                    weight.double(),
                    (logits.argmax(dim=1) == labels).sum().double(),
                    torch.tensor(labels.numel(), dtype=torch.float64, device=device),
                ]
            )
        if should_stop():
            stopped = True
            break
    seconds = time.perf_counter() - started
    totals = _all_reduce_sum(totals)
    loss_sum, weight_sum, correct, count = totals.tolist()
    return EpochResult(
        loss=loss_sum / weight_sum if weight_sum else math.nan,
        accuracy=correct / count if count else math.nan,
        images=int(count),
        seconds=_all_reduce_max(seconds),
        stopped=stopped,
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    channel: ChannelData,
    *,
    batch_size: int,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    image_size: tuple[int, int],
    class_weight: torch.Tensor | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Loss, accuracy, AUC, BAC and F1 on a whole channel.

    Each rank scores a disjoint slice; the probabilities are gathered so every
    rank computes the same, exact metrics.

    Args:
        model: The unwrapped network (not the DDP wrapper).
        channel: Validation data.
        batch_size: Images per forward pass.
        mean: (3,) normalisation means on ``device``.
        std: (3,) normalisation stds on ``device``.
        device: Where to compute.
        image_size: (h, w) model input; patches are centre-cropped to it.
        class_weight: (C,) weights of the loss, as in training.
        rank: This process's rank.
        world_size: Number of processes.

    Returns:
        ``(metrics, labels, probabilities)`` over the whole channel; metrics are
        ``loss``, ``accuracy``, ``auc``, ``bac``, ``f1``.
    """
    from bcd.algorithms.augment import center_crop

    model.eval()
    layout = input_memory_format(device)
    loader = BatchLoader(
        channel, batch_size, shuffle=False, rank=rank, world_size=world_size, drop_uneven=False
    )
    probabilities, losses, labels_seen = [], [], []
    for images, labels in loader.batches(0):
        inputs = normalize(center_crop(images.to(device), image_size), mean, std)
        logits = model(inputs.contiguous(memory_format=layout))  # (B, C)
        labels = labels.to(device)
        losses.append(nn.functional.cross_entropy(logits, labels, reduction="none"))
        probabilities.append(torch.softmax(logits.float(), dim=1))
        labels_seen.append(labels)
    num_classes = _num_outputs(model, probabilities)
    local = (
        torch.cat(probabilities) if probabilities else torch.zeros(0, num_classes, device=device),
        torch.cat(losses) if losses else torch.zeros(0, device=device),
        torch.cat(labels_seen) if labels_seen else torch.zeros(0, dtype=torch.long, device=device),
    )
    probs, nll, labels = _gather_padded(*local, world_size=world_size)
    weights = class_weight.to(device)[labels] if class_weight is not None else torch.ones_like(nll)
    loss = float((weights * nll).sum() / weights.sum()) if labels.numel() else math.nan
    labels_np = labels.cpu().numpy()
    probabilities_np = probs.cpu().double().numpy()
    return classification_metrics(labels_np, probabilities_np, loss), labels_np, probabilities_np


@dataclass
class ModelSelection:
    """Tracks the best epoch and SageMaker-style early stopping.

    Attributes:
        metric: The validation metric that decides (e.g. ``validation:bac``).
        patience: Epochs without a significant improvement before stopping.
        min_epochs: Epochs always run before stopping may happen.
        tolerance: Relative improvement below which an epoch does not count.
        enabled: Whether early stopping is on (the best epoch is tracked anyway).
    """

    metric: str
    patience: int
    min_epochs: int
    tolerance: float
    enabled: bool
    best_epoch: int = 0
    best_value: float | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    reference_value: float | None = None
    epochs_since_improvement: int = 0

    def update(self, epoch: int, metrics: Mapping[str, float]) -> bool:
        """Record 1-based ``epoch``'s metrics; True when it is the new best."""
        value = float(metrics.get(self.metric, math.nan))
        improved = not math.isnan(value) and (
            self.best_value is None or self._better(value, self.best_value)
        )
        if improved:
            self.best_epoch, self.best_value, self.best_metrics = epoch, value, dict(metrics)
        significant = not math.isnan(value) and (
            self.reference_value is None or self._relative_gain(value) > self.tolerance
        )
        if significant:
            self.reference_value = value
            self.epochs_since_improvement = 0
        else:
            self.epochs_since_improvement += 1
        return improved

    def should_stop(self, epoch: int) -> bool:
        """True when early stopping ends training after 1-based ``epoch``."""
        return (
            self.enabled
            and epoch >= self.min_epochs
            and self.epochs_since_improvement >= self.patience
        )

    def state(self) -> dict[str, Any]:
        """A plain dict for checkpoints."""
        return {
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "best_metrics": dict(self.best_metrics),
            "reference_value": self.reference_value,
            "epochs_since_improvement": self.epochs_since_improvement,
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state`."""
        self.best_epoch = int(state["best_epoch"])
        self.best_value = state["best_value"]
        self.best_metrics = dict(state["best_metrics"])
        self.reference_value = state["reference_value"]
        self.epochs_since_improvement = int(state["epochs_since_improvement"])

    def _better(self, value: float, than: float) -> bool:
        return value < than if self.metric in MINIMIZED_METRICS else value > than

    def _relative_gain(self, value: float) -> float:
        assert self.reference_value is not None
        gain = (
            self.reference_value - value
            if self.metric in MINIMIZED_METRICS
            else value - self.reference_value
        )
        scale = abs(self.reference_value)
        if scale == 0:
            return math.inf if gain > 0 else 0.0
        return gain / scale


@contextmanager
def _data_threads(device: torch.device) -> Iterator[None]:
    """Run batch preparation on one CPU thread.

    The augmentation ops are small; split over several OpenMP threads on a busy
    machine they wait on each other far longer than they compute (measured 4–5×
    slower on 2 shared cores), while the model's large kernels do gain.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _num_outputs(model: nn.Module, probabilities: list[torch.Tensor]) -> int:
    if probabilities:
        return int(probabilities[0].shape[1])
    last = [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    return int(last.out_features)


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _all_reduce_max(value: float) -> float:
    if not _distributed():
        return value
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_padded(
    probabilities: torch.Tensor, nll: torch.Tensor, labels: torch.Tensor, world_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All-gather per-rank slices of different lengths (padding marked by label −1)."""
    if world_size == 1 or not _distributed():
        return probabilities, nll, labels
    import torch.distributed as dist

    size = torch.tensor([labels.numel()], device=labels.device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    pad = int(size.item()) - labels.numel()
    probabilities = torch.cat([probabilities, probabilities.new_zeros(pad, probabilities.shape[1])])
    nll = torch.cat([nll, nll.new_zeros(pad)])
    labels = torch.cat([labels, labels.new_full((pad,), -1)])
    gathered = []
    for tensor in (probabilities, nll, labels):
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor)
        gathered.append(torch.cat(parts))
    keep = gathered[2] >= 0
    return gathered[0][keep], gathered[1][keep], gathered[2][keep]
