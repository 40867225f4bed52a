"""The built-in trainer: ``python -m bcd.algorithms.train --algorithm cnn --epochs 3 ...``.

Runs one process of a training job under the training job contract
(``docs/architecture.md``): reads ``SM_CHANNEL_TRAIN``/``SM_CHANNEL_VALIDATION``,
prints ``#metric epoch=<e> <name>=<value>`` lines each epoch, checkpoints to
``BCD_CHECKPOINT_DIR`` every ``checkpoint_frequency`` epochs and resumes from
the newest checkpoint there, saves a checkpoint and exits 0 on SIGTERM, and
(primary process only) writes the best epoch's model to ``SM_MODEL_DIR``.
With ``WORLD_SIZE > 1`` it trains data-parallel (DistributedDataParallel;
gloo on CPU, NCCL on GPU).

Exit codes: 0 finished or stopped, 2 bad input (the reason is the last line
on stderr), 1 an unexpected crash (with its traceback).
"""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import nn

from bcd.algorithms import get_algorithm
from bcd.algorithms._builtin import BuiltinAlgorithm
from bcd.algorithms._hyperparameters import image_shape_tuple
from bcd.algorithms.artifacts import write_artifacts
from bcd.algorithms.augment import BatchAugmenter, center_crop, normalize
from bcd.algorithms.channels import (
    BatchLoader,
    ChannelData,
    compute_channel_stats,
    open_channel_data,
)
from bcd.algorithms.checkpoints import (
    check_compatible,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from bcd.algorithms.distillation import Distillation, score_teacher
from bcd.algorithms.environment import (
    TrainingEnvironment,
    configure_threads,
    init_distributed,
    select_device,
)
from bcd.algorithms.metrics import emit_metrics
from bcd.algorithms.models import build_model
from bcd.algorithms.training import (
    ModelSelection,
    StepControl,
    TrainingDivergedError,
    evaluate,
    learning_rate_at,
    make_optimizer,
    parameter_groups,
    set_learning_rate,
    train_one_epoch,
    training_loss,
)
from bcd.errors import BcdError, InvalidInputError
from bcd.stain import StainNormalizer

logger = logging.getLogger(__name__)

PARITY_BATCH = 16


class StopRequest:
    """Set by SIGTERM/SIGINT; polled between batches."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""

    def install(self) -> None:
        """Route SIGTERM and SIGINT to :meth:`handle` (until :meth:`uninstall`)."""
        self._previous = {
            signum: signal.signal(signum, self.handle) for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def uninstall(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for signum, handler in getattr(self, "_previous", {}).items():
            signal.signal(signum, handler)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: remember the request, let the loop stop cleanly."""
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def agreed(self) -> bool:
        """Whether any process was asked to stop (all ranks get the same answer)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)


@dataclass
class Job:
    """Everything one training process works with."""

    algorithm: str
    hyperparameters: dict[str, Any]
    environment: TrainingEnvironment
    device: torch.device
    train: ChannelData
    validation: ChannelData
    model: nn.Module
    wrapped: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: nn.Module
    selection: ModelSelection
    mean: torch.Tensor
    std: torch.Tensor
    image_size: tuple[int, int]
    # (mean, std) on the 0–1 scale, as written into model.json.
    normalization: tuple[tuple[float, float, float], tuple[float, float, float]]
    distillation: Distillation | None = None
    stain: StainNormalizer | None = None
    completed_epochs: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def parse_arguments(argv: Sequence[str]) -> tuple[BuiltinAlgorithm, dict[str, Any]]:
    """``--algorithm NAME --key value ...`` → the algorithm and validated hyperparameters.

    Raises:
        InvalidInputError: For a missing or non-built-in algorithm, a malformed
            argument list, or invalid hyperparameters.
    """
    arguments = list(argv)
    raw: dict[str, str] = {}
    algorithm_name = None
    while arguments:
        flag = arguments.pop(0)
        if not flag.startswith("--") or not arguments:
            raise InvalidInputError(
                f"expected '--name value' pairs, got {flag!r}; "
                "usage: python -m bcd.algorithms.train --algorithm cnn --epochs 3 ..."
            )
        name, value = flag[2:], arguments.pop(0)
        if name == "algorithm":
            algorithm_name = value
        elif name in raw:
            raise InvalidInputError(f"hyperparameter {name!r} is given twice")
        else:
            raw[name] = value
    if algorithm_name is None:
        raise InvalidInputError("--algorithm is required (cnn or image-classification)")
    algorithm = get_algorithm(algorithm_name)
    if not isinstance(algorithm, BuiltinAlgorithm):
        raise InvalidInputError(
            f"algorithm {algorithm_name!r} is not run by the built-in trainer; "
            "use cnn or image-classification"
        )
    return algorithm, algorithm.validate_hyperparameters(raw)


def setup(algorithm: str, hyperparameters: dict[str, Any], environment: TrainingEnvironment) -> Job:
    """Open the channels, build the model, optimiser and loss, join the group.

    Raises:
        InvalidInputError: For missing/empty channels, patches that do not match
            ``image_shape``, or labels outside ``num_classes``.
    """
    device = select_device(environment)
    train = open_channel_data(environment.channel("train"), "train")
    validation = open_channel_data(environment.channel("validation"), "validation")
    _, height, width = image_shape_tuple(hyperparameters["image_shape"])
    num_classes = int(hyperparameters["num_classes"])
    patch_size = _patch_size(train, validation, (height, width), hyperparameters["image_shape"])
    for name, channel in (("train", train), ("validation", validation)):
        if int(channel.labels.max()) >= num_classes:
            raise InvalidInputError(
                f"channel {name!r} has label {int(channel.labels.max())} but "
                f"num_classes={num_classes}; raise num_classes"
            )
    expected = int(hyperparameters["num_training_samples"])
    if expected and expected != len(train):
        logger.warning(
            "num_training_samples=%d but the train channel holds %d images; using %d",
            expected,
            len(train),
            len(train),
        )
    init_distributed(environment, device)
    torch.manual_seed(int(hyperparameters["seed"]))
    model = build_model(algorithm, hyperparameters).to(device)
    wrapped: nn.Module = model
    if environment.distributed:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    criterion = training_loss(hyperparameters, train.labels, num_classes).to(device)
    # The teacher scores the raw patches: its own model.json says how it normalises them.
    distillation = _distillation(hyperparameters, environment, train, device)
    stain = _stain_normalization(hyperparameters, train, validation)
    normalization = _normalization(hyperparameters, train)
    groups = parameter_groups(model, float(hyperparameters.get("lr_backbone_factor", 1.0)))
    selection = ModelSelection(
        metric=hyperparameters["model_selection_metric"],
        patience=int(hyperparameters["early_stopping_patience"]),
        min_epochs=int(hyperparameters["early_stopping_min_epochs"]),
        tolerance=float(hyperparameters["early_stopping_tolerance"]),
        enabled=bool(hyperparameters["early_stopping"]),
    )
    mean, std = normalization
    return Job(
        algorithm=algorithm,
        hyperparameters=hyperparameters,
        environment=environment,
        device=device,
        train=train,
        validation=validation,
        model=model,
        wrapped=wrapped,
        optimizer=make_optimizer(hyperparameters["optimizer"], groups, hyperparameters),
        criterion=criterion,
        selection=selection,
        mean=torch.tensor(mean, dtype=torch.float32, device=device),
        std=torch.tensor(std, dtype=torch.float32, device=device),
        image_size=patch_size,
        normalization=normalization,
        distillation=distillation,
        stain=stain,
    )


def _distillation(
    hyperparameters: dict[str, Any],
    environment: TrainingEnvironment,
    train: ChannelData,
    device: torch.device,
) -> Distillation | None:
    """Score the train channel with the teacher once (a ``teacher`` channel, else its path)."""
    teacher = str(hyperparameters.get("teacher", ""))
    if not teacher:
        return None
    folder = environment.channels.get("teacher") or Path(teacher).expanduser()
    logits = score_teacher(folder, train.images, threads=torch.get_num_threads())
    return Distillation(
        teacher_logits=torch.from_numpy(logits).to(device),
        alpha=float(hyperparameters["distillation_alpha"]),
        temperature=float(hyperparameters["distillation_temperature"]),
    )


def _stain_normalization(
    hyperparameters: dict[str, Any], train: ChannelData, validation: ChannelData
) -> StainNormalizer | None:
    """Fit the reference stain on the train channel; normalise both channels once.

    Normalisation is deterministic per patch, so it runs once here, before any
    augmentation, rather than every epoch; the normalised patches are held in
    memory (N·H·W·3 bytes per channel) and the train split's channel statistics
    are recomputed from them.
    """
    method = str(hyperparameters.get("stain_normalization", "none"))
    if method == "none":
        return None
    started = time.perf_counter()
    stain = StainNormalizer.fit(method, train.images)
    for channel in (train, validation):
        channel.images = stain(channel.images)
    train.mean, train.std = compute_channel_stats(train.images)
    logger.info(
        "%s stain normalisation of %d + %d patches took %.1f s",
        method,
        len(train),
        len(validation),
        time.perf_counter() - started,
    )
    return stain


def _patch_size(
    train: ChannelData, validation: ChannelData, network: tuple[int, int], image_shape: str
) -> tuple[int, int]:
    """The channels' common patch size; the network resizes it to ``image_shape``.

    Raises:
        InvalidInputError: If the channels' patch sizes differ, or differ from
            ``image_shape`` where the network cannot resize (only from the packed
            50×50 can it).
    """
    from bcd.algorithms.models import NATIVE_SIZE

    sizes = {
        name: tuple(channel.images.shape[1:3])
        for name, channel in (("train", train), ("validation", validation))
    }
    if sizes["train"] != sizes["validation"]:
        raise InvalidInputError(
            f"channel 'train' holds {sizes['train'][0]}x{sizes['train'][1]} patches but "
            f"'validation' holds {sizes['validation'][0]}x{sizes['validation'][1]}; "
            "pack both at one size"
        )
    size = sizes["train"]
    if size != network and size != NATIVE_SIZE:
        raise InvalidInputError(
            f"channel 'train' holds {size[0]}x{size[1]} patches but image_shape is "
            f"{image_shape}; set image_shape=3,{size[0]},{size[1]} (only 50x50 patches are "
            "resized inside the network)"
        )
    if size != network:
        logger.info("the network resizes %dx%d patches to %dx%d", size[0], size[1], *network)
    return (int(size[0]), int(size[1]))


def _normalization(
    hyperparameters: dict[str, Any], train: ChannelData
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) on the 0–1 scale: the train split's, or ImageNet's for pretrained weights."""
    from bcd.algorithms.efficientnet import IMAGENET_MEAN, IMAGENET_STD

    setting = hyperparameters.get("normalization", "dataset")
    if setting == "auto":
        setting = "imagenet" if hyperparameters.get("use_pretrained_model") else "dataset"
    if setting == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    assert train.mean is not None and train.std is not None
    mean, std = train.mean, train.std
    return (
        (float(mean[0]), float(mean[1]), float(mean[2])),
        (float(std[0]), float(std[1]), float(std[2])),
    )


def resume(job: Job) -> None:
    """Load the newest checkpoint in ``BCD_CHECKPOINT_DIR`` into ``job``, if any.

    Raises:
        InvalidInputError: For a corrupt checkpoint or one of another network
            (the message names the file).
    """
    path = latest_checkpoint(job.environment.checkpoint_dir)
    if path is None:
        return
    state = load_checkpoint(path)
    check_compatible(state, job.algorithm, job.hyperparameters, path)
    try:
        job.model.load_state_dict(state["model"])
        job.optimizer.load_state_dict(state["optimizer"])
        job.selection.load_state(state["selection"])
    except (KeyError, RuntimeError, ValueError) as error:
        raise InvalidInputError(
            f"checkpoint {str(path)!r} does not fit this model ({error}); delete it or start "
            "from a checkpoint of the same configuration"
        ) from None
    job.completed_epochs = int(state["epoch"])
    job.best_state = state.get("best_model")
    job.history = list(state.get("history", []))
    logger.info("resumed from %s after %d completed epochs", path.name, job.completed_epochs)


def checkpoint(job: Job, interrupted: bool = False) -> Path | None:
    """Save the job's state (primary process only); returns the file written."""
    directory = job.environment.checkpoint_dir
    if directory is None or not job.environment.is_primary:
        return None
    return save_checkpoint(
        directory,
        {
            "algorithm": job.algorithm,
            "hyperparameters": job.hyperparameters,
            "epoch": job.completed_epochs,
            "interrupted": interrupted,
            "model": job.model.state_dict(),
            "optimizer": job.optimizer.state_dict(),
            "selection": job.selection.state(),
            "best_model": job.best_state,
            "history": job.history,
            "normalization": {
                "mean": list(job.normalization[0]),
                "std": list(job.normalization[1]),
            },
            "dataset_fingerprint": job.train.fingerprint,
        },
    )


def run_epochs(job: Job, stop: StopRequest) -> bool:
    """Train from ``job.completed_epochs`` on; returns True when stopped by a signal."""
    hps = job.hyperparameters
    environment = job.environment
    loader = BatchLoader(
        job.train,
        int(hps["mini_batch_size"]),
        shuffle=True,
        seed=int(hps["seed"]),
        rank=environment.rank,
        world_size=environment.world_size,
    )
    generator = torch.Generator()
    augmenter = BatchAugmenter(
        hps["augmentation_type"],
        job.image_size,
        generator,
        stain_jitter=float(hps.get("stain_jitter", 0.0)),
    )
    epochs, frequency = int(hps["epochs"]), int(hps["checkpoint_frequency"])
    warmup_steps = round(float(hps.get("warmup_epochs", 0.0)) * len(loader))
    while job.completed_epochs < epochs:
        index = job.completed_epochs  # 0-based epoch about to run
        # Per-epoch seeds make a resumed run draw what an uninterrupted one would.
        generator.manual_seed(int(hps["seed"]) * 1_000_003 + index * 7919 + environment.rank)
        torch.manual_seed(int(hps["seed"]) + index)
        rate = learning_rate_at(index, hps)
        set_learning_rate(job.optimizer, rate)
        control = StepControl(
            base_rate=rate,
            warmup_steps=warmup_steps,
            first_step=index * len(loader),
            clip_norm=float(hps.get("gradient_clip_norm", 0.0)),
        )
        result = train_one_epoch(
            job.wrapped,
            job.optimizer,
            job.criterion,
            loader,
            index,
            augmenter=augmenter,
            mean=job.mean,
            std=job.std,
            device=job.device,
            should_stop=stop.agreed,
            mixup_alpha=float(hps.get("mixup_alpha", 0.0)),
            control=control,
            distillation=job.distillation,
        )
        if result.stopped:
            return True
        validation, _, _ = evaluate(
            job.model,
            job.validation,
            batch_size=max(int(hps["mini_batch_size"]), 256),
            mean=job.mean,
            std=job.std,
            device=job.device,
            image_size=job.image_size,
            class_weight=getattr(job.criterion, "weight", None),
            rank=environment.rank,
            world_size=environment.world_size,
        )
        if len(job.validation) and not math.isfinite(validation["loss"]):
            raise TrainingDivergedError(index + 1, validation["loss"])
        job.completed_epochs = epoch = index + 1
        metrics = {
            "train:loss": result.loss,
            "train:accuracy": result.accuracy,
            **{f"validation:{name}": value for name, value in validation.items()},
        }
        timing = {"train:throughput": result.throughput, "train:epoch_seconds": result.seconds}
        if job.selection.update(epoch, metrics) and environment.is_primary:
            job.best_state = {
                k: v.detach().cpu().clone() for k, v in job.model.state_dict().items()
            }
        job.history.append({"epoch": epoch, **metrics, **timing})
        if environment.is_primary:
            emit_metrics(epoch, {**metrics, **timing}, sys.stdout)
            logger.info(
                "epoch %d/%d: train loss %.4f acc %.4f | validation bac %.4f auc %.4f | "
                "%.1f s, %.0f images/s",
                epoch,
                epochs,
                result.loss,
                result.accuracy,
                metrics["validation:bac"],
                metrics["validation:auc"],
                result.seconds,
                result.throughput,
            )
        last = epoch == epochs or job.selection.should_stop(epoch)
        if epoch % frequency == 0 or last:
            checkpoint(job)
        if job.selection.should_stop(epoch):
            logger.info(
                "early stopping after epoch %d (best epoch %d)", epoch, job.selection.best_epoch
            )
            return False
        if stop.agreed():
            return True
    return False


def finish(job: Job) -> None:
    """Write the best epoch's model and the history (primary process only)."""
    environment = job.environment
    if not environment.is_primary or job.completed_epochs == 0:
        return
    final = {key: value for key, value in job.history[-1].items() if key != "epoch"}
    if job.best_state is not None:
        job.model.load_state_dict(job.best_state)
    best_epoch = job.selection.best_epoch or job.completed_epochs
    best = job.selection.best_metrics or final
    count = min(PARITY_BATCH, len(job.validation))
    sample = torch.from_numpy(np.array(job.validation.images[:count]))
    parity_batch = normalize(
        center_crop(sample.permute(0, 3, 1, 2), job.image_size), job.mean.cpu(), job.std.cpu()
    )
    write_artifacts(
        environment.model_dir,
        job.model,
        algorithm=job.algorithm,
        hyperparameters=job.hyperparameters,
        mean=job.normalization[0],
        std=job.normalization[1],
        parity_batch=parity_batch,
        metrics={"best_epoch": best_epoch, "best": best, "final": final},
        dataset={
            "name": job.train.dataset_name,
            "fingerprint": job.train.fingerprint,
            "validation_fingerprint": job.validation.fingerprint,
            "train_images": len(job.train),
            "validation_images": len(job.validation),
        },
        training={
            "epochs_completed": job.completed_epochs,
            "world_size": environment.world_size,
            "device": job.device.type,
            "epoch_seconds": [entry.get("train:epoch_seconds") for entry in job.history],
        },
        stain_normalization=job.stain.to_json() if job.stain else None,
    )
    environment.output_data_dir.mkdir(parents=True, exist_ok=True)
    history = json.dumps(job.history, indent=1, allow_nan=True)
    (environment.output_data_dir / "history.json").write_text(history)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training process; returns the exit code.

    Args:
        argv: ``--algorithm NAME --key value ...`` (default ``sys.argv[1:]``).

    Returns:
        0 when training finished or was stopped by a signal, 2 for bad input.
    """
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    stop = StopRequest()
    stop.install()
    try:
        algorithm, hyperparameters = parse_arguments(sys.argv[1:] if argv is None else argv)
        environment = TrainingEnvironment.from_environ()
        threads = configure_threads(environment)
        logger.info(
            "algorithm %s, rank %d of %d, %d torch threads",
            algorithm.name,
            environment.rank,
            environment.world_size,
            threads,
        )
        job = setup(algorithm.name, hyperparameters, environment)
        resume(job)
        started = time.perf_counter()
        stopped = run_epochs(job, stop)
        if stopped:
            path = checkpoint(job, interrupted=True)
            logger.info(
                "stopped by %s after %d completed epochs%s",
                stop.signal_name or "a peer",
                job.completed_epochs,
                f"; checkpoint {path.name}" if path else "",
            )
        finish(job)
        logger.info("training took %.1f s", time.perf_counter() - started)
        return 0
    except TrainingDivergedError as error:
        # SageMaker's convention: output/failure becomes the job's FailureReason.
        logger.error("%s", error)
        sys.stderr.write(f"error: {error}\n")
        sys.stderr.flush()
        _write_failure(str(error))
        return 2
    except BcdError as error:
        logger.error("%s", error)
        sys.stderr.write(f"error: {error}\n")
        sys.stderr.flush()
        return 2
    finally:
        stop.uninstall()
        _leave_process_group()


def _write_failure(message: str) -> None:
    """Write ``output/failure`` beside ``SM_OUTPUT_DATA_DIR`` (the primary process only)."""
    try:
        environment = TrainingEnvironment.from_environ()
    except BcdError:
        return
    if environment.is_primary:
        path = environment.output_data_dir.parent / "failure"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message + "\n")


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
