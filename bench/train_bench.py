"""Training throughput: the full job path vs a bare torch loop, same model, same run.

For each algorithm it prints images/s of

- ``bare``: forward, loss, backward and optimiser step over in-memory float
  tensors, already normalised, in the memory layout the trainer feeds the model
  (``bcd.algorithms.training.input_memory_format``), with the trainer's own
  model, optimiser (``make_optimizer``: same kind, weight decay and update
  kernel), class-weighted loss and torch thread count; no data path, no
  shuffling, no augmentation, no metric sums;
- ``job``: a real training job (``bcd.jobs``: supervisor, child process,
  instance-metric sampling, metric scraping) with the same hyperparameters and
  ``BCD_NUM_THREADS``, taken from the trainer's per-epoch ``train:throughput``
  metric (median of epochs after the first). That metric times the training
  loop only: shuffled batch reads from the packed split, uint8 -> float,
  augmentation (none by default), normalisation, the step and the running loss
  and accuracy sums. Validation, checkpoints and metric lines between epochs
  are not counted;
- ``job end-to-end``: training images x epochs / the job's whole training time
  (process start, torch import, validation, checkpoints, ONNX export
  included), for information;

and the ratio job / bare (target >= 0.9: the data path is not the bottleneck).
With ``--augmentation`` other than ``none`` the job also pays for augmentation
and the bare loop does not; the output says so. The bare loop makes as many
passes before the job as after it, so load from other processes on a shared
machine hits both sides alike; medians and best-of-N are both printed
(best-of is the steadier one under load). The bench polls the job's status
every 2 s, so its own polling barely competes with the job for the CPU.

    .venv/bin/python bench/train_bench.py [--algorithms cnn,image-classification]
        [--patients 12] [--epochs 3] [--batch 128] [--threads 2] [--augmentation none]
        [--stem compact|full|imagenet] [--architecture efficientnet-lite0 --image-size 96]

The ResNet's default ``compact`` stem (3x3 stride-2 conv, no max-pool) keeps
25x25 feature maps after the stem, about 4x the work of torchvision's
``imagenet`` stem (13x13); compare with published ResNet-18 numbers using
``--stem imagenet``. ``--architecture efficientnet-lite0 --image-size 96`` times
the transfer-learning network instead (ImageNet weights from the installed
package, patches upsampled to 96x96 inside the network).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

POLL_S = 2.0
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "IDC_regular_ps50_idx5"


def make_dataset(settings, patients: int) -> str:  # type: ignore[no-untyped-def]
    """Import ``patients`` real patients (or synthetic ones when the data is absent)."""
    from bcd.data import SplitSpec, import_dataset
    from bcd.testing import copy_real_patients, make_synthetic_dataset

    if not SHARED.is_dir():
        make_synthetic_dataset("bench", settings, n_patients=patients, patches_per_patient=150)
        return "synthetic"
    chosen = sorted(path.name for path in SHARED.iterdir() if path.is_dir())[:patients]
    with tempfile.TemporaryDirectory() as folder:
        tree = copy_real_patients(SHARED, Path(folder) / "IDC_regular_ps50_idx5", chosen)
        import_dataset(tree, "bench", settings=settings, split=SplitSpec((0.8, 0.2), 7), workers=0)
    return f"{patients} real patients"


def bare_loop(algorithm: str, hyperparameters: dict[str, str], settings, threads: int) -> float:  # type: ignore[no-untyped-def]
    """Images/s of forward+loss+backward+step over in-memory tensors (one pass, after warm-up).

    Everything that the trainer does per step besides its data path is the
    trainer's own: model, optimiser, class-weighted loss, input memory layout.
    """
    import numpy as np
    import torch

    from bcd.algorithms import get_algorithm
    from bcd.algorithms.augment import normalize
    from bcd.algorithms.models import build_model
    from bcd.algorithms.training import class_weights, input_memory_format, make_optimizer
    from bcd.data import open_split

    torch.set_num_threads(threads)
    values = get_algorithm(algorithm).validate_hyperparameters(hyperparameters)
    torch.manual_seed(int(values["seed"]))
    split = open_split("bench", "train", settings)
    mean, std = (torch.tensor(stat, dtype=torch.float32) for stat in split.channel_stats())
    images = torch.from_numpy(np.array(split.images)).permute(0, 3, 1, 2)  # (N, 3, 50, 50) uint8
    layout = input_memory_format(torch.device("cpu"))
    images = normalize(images, mean, std).contiguous(memory_format=layout)  # (N, 3, 50, 50)
    labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
    model = build_model(algorithm, values)
    model.train()
    optimizer = make_optimizer(values["optimizer"], model.parameters(), values)
    weights = class_weights(values["class_weights"], labels.numpy(), int(values["num_classes"]))
    criterion = torch.nn.CrossEntropyLoss(weight=weights)
    batch = int(values["mini_batch_size"])

    def step(start: int) -> None:
        logits = model(images[start : start + batch])  # (B, 2)
        loss = criterion(logits, labels[start : start + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step(0)  # warm-up
    started = time.perf_counter()
    for start in range(0, len(labels), batch):
        step(start)
    return len(labels) / (time.perf_counter() - started)


def job_path(
    algorithm: str,
    hyperparameters: dict[str, str],
    settings,  # type: ignore[no-untyped-def]
    name: str,
    threads: int,
) -> tuple[float, float, list[float]]:
    """Run a real job; returns (median epoch img/s after the first, end-to-end img/s, all)."""
    from bcd.data import open_split
    from bcd.jobs import TrainingJobService, get_metric_series

    service = TrainingJobService(settings)
    service.create(
        {
            "TrainingJobName": name,
            "AlgorithmSpecification": {"AlgorithmName": algorithm},
            "HyperParameters": hyperparameters,
            "InputDataConfig": [
                {"ChannelName": "train", "Uri": "dataset://bench/train"},
                {"ChannelName": "validation", "Uri": "dataset://bench/validation"},
            ],
            "Environment": {"BCD_NUM_THREADS": str(threads)},
        }
    )
    while service.describe(name)["TrainingJobStatus"] in ("InProgress", "Stopping"):
        time.sleep(POLL_S)
    job = service.describe(name)
    if job["TrainingJobStatus"] != "Completed":
        raise SystemExit(f"job {name} ended {job['TrainingJobStatus']}: {job.get('FailureReason')}")
    per_epoch = [point.value for point in get_metric_series(name, "train:throughput", settings)]
    steady = per_epoch[1:] or per_epoch
    images = len(open_split("bench", "train", settings)) * int(hyperparameters["epochs"])
    seconds = (job["TrainingEndTime"] - job["TrainingStartTime"]).total_seconds()
    return statistics.median(steady), images / seconds, per_epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="cnn,image-classification")
    parser.add_argument("--patients", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--augmentation", default="none")
    parser.add_argument(
        "--stem", default="compact", help="ResNet stem: compact (default), full or imagenet."
    )
    parser.add_argument(
        "--architecture",
        default="resnet",
        help="image-classification network: resnet (default) or efficientnet-lite0/1/2",
    )
    parser.add_argument(
        "--image-size", type=int, default=50, help="network input size (50 = no resizing)"
    )
    args = parser.parse_args()

    from bcd.config import Settings
    from bcd.data import open_split

    with tempfile.TemporaryDirectory(prefix="bcd-train-bench-") as home:
        settings = Settings(home=Path(home), job_sample_interval_s=5.0)
        source = make_dataset(settings, args.patients)
        count = len(open_split("bench", "train", settings))
        print(
            f"data: {source}, {count} training patches; batch {args.batch}, "
            f"{args.threads} threads, augmentation {args.augmentation}"
        )
        print(
            "compared: bare = step only (trainer's model, optimiser, weighted loss, input "
            "layout) on normalised in-memory tensors; job = trainer's training loop "
            "(batch reads, uint8->float, augmentation, normalisation, step, loss sums), "
            "validation and checkpoints not counted"
        )
        if args.augmentation != "none":
            print(
                f"note: the job augments ({args.augmentation}) and the bare loop does not; "
                "the ratio includes the augmentation's cost"
            )
        for algorithm in args.algorithms.split(","):
            hyperparameters = {
                "epochs": str(args.epochs),
                "mini_batch_size": str(args.batch),
                "augmentation_type": args.augmentation,
                "early_stopping": "false",
            }
            if algorithm == "image-classification":
                hyperparameters["num_layers"] = "18"
                hyperparameters["stem"] = args.stem
                hyperparameters["architecture"] = args.architecture
                hyperparameters["image_shape"] = f"3,{args.image_size},{args.image_size}"
                if args.architecture != "resnet":
                    hyperparameters["use_pretrained_model"] = "1"
            bare_runs = [
                bare_loop(algorithm, hyperparameters, settings, args.threads)
                for _ in range(args.epochs)
            ]
            steady, end_to_end, per_epoch = job_path(
                algorithm, hyperparameters, settings, f"bench-{algorithm}", args.threads
            )
            bare_runs += [
                bare_loop(algorithm, hyperparameters, settings, args.threads)
                for _ in range(args.epochs)
            ]
            bare = statistics.median(bare_runs)
            epochs = ", ".join(f"{value:.0f}" for value in per_epoch)
            passes = ", ".join(f"{value:.0f}" for value in bare_runs)
            print(
                f"{algorithm}: bare median {bare:.0f} img/s, best {max(bare_runs):.0f} "
                f"(passes: {passes})"
            )
            print(
                f"{algorithm}: job median {steady:.0f} img/s, best {max(per_epoch):.0f} "
                f"(epochs: {epochs}); job end-to-end {end_to_end:.0f} img/s"
            )
            print(
                f"{algorithm}: ratio job/bare = {steady / bare:.2f} median, "
                f"{max(per_epoch) / max(bare_runs):.2f} best-of (target >= 0.90)"
            )


if __name__ == "__main__":
    main()
