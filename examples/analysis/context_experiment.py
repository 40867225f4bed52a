"""Does seeing a patch's neighbourhood help? A patch + context network on the patient grid.

Every IDC patch of the dataset has its place on its patient's slide (``x``,
``y`` in steps of 50 px), so the tissue around it can be rebuilt from the
patient's other patches. This experiment gives the network, beside the 50×50
patch, the ``(2r + 1)²``-patch square centred on it, shrunk to 50×50 (places
with no patch, which the dataset leaves out as background, are white). The two
images are stacked as 6 input channels of the bundled model's ``deep``
network, so only its first convolution grows (about 7% more compute per
patch than the patch-only network).

Training follows the bundled model's recipe (Adam, cosine schedule, balanced
loss, dihedral + crop + colour and H&E stain jitter, best epoch by validation
AUC) on the train split; the report gives validation and test AUC, the best
BAC over all thresholds on validation, and test BAC at the threshold chosen on
validation. It is an experiment, not a model the server can run: serving
single patches cannot supply the neighbourhood.

    BCD_HOME=... .venv/bin/python examples/analysis/context_experiment.py \
        --dataset idc --radius 2 --epochs 16 --out context-r2.json

``--radius 0`` trains the same loop without context (3 channels), as a
baseline for this script's own recipe. ``--boundary-weight W`` scales the
loss of training patches that touch a patch of the other label on the grid
(where labels drawn as coarse regions are least reliable).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bcd.algorithms.augment import color_jitter, hed_jitter, random_crop
from bcd.algorithms.models import DeepCNN
from bcd.config import get_settings
from bcd.evaluation import bac_optimal_threshold, dataset_patches, point_metrics

GRID = 50  # the dataset's patch size and step, in pixels
WHITE = 255


def context_images(
    images: np.ndarray, patients: np.ndarray, xs: np.ndarray, ys: np.ndarray, radius: int
) -> np.ndarray:
    """Each patch's ``(2·radius + 1)``-patch neighbourhood, shrunk to the patch size.

    Args:
        images: (N, 50, 50, 3) uint8 patches.
        patients: (N,) patient ids.
        xs, ys: (N,) top-left pixel of each patch on its patient's slide.
        radius: Neighbourhood radius in patches.

    Returns:
        (N, 50, 50, 3) uint8: the square around each patch, area-averaged.
    """
    side = (2 * radius + 1) * GRID
    context = np.empty_like(images)
    for patient in np.unique(patients):
        members = np.flatnonzero(patients == patient)
        cols = xs[members] // GRID
        rows = ys[members] // GRID
        height = (int(rows.max()) + 1 + 2 * radius) * GRID
        width = (int(cols.max()) + 1 + 2 * radius) * GRID
        mosaic = np.full((height, width, 3), WHITE, np.uint8)
        for index, col, row in zip(members, cols, rows, strict=True):
            top, left = (row + radius) * GRID, (col + radius) * GRID
            mosaic[top : top + GRID, left : left + GRID] = images[index]
        windows = np.stack(
            [
                mosaic[row * GRID : row * GRID + side, col * GRID : col * GRID + side]
                for col, row in zip(cols, rows, strict=True)
            ]
        )  # (M, side, side, 3)
        shrunk = F.interpolate(
            torch.from_numpy(windows).permute(0, 3, 1, 2).float(), size=(GRID, GRID), mode="area"
        )
        context[members] = shrunk.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return context


def on_label_boundary(
    labels: np.ndarray, patients: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """(N,) bool: the patch has one of its 8 grid neighbours with the other label."""
    boundary = np.zeros(len(labels), bool)
    for patient in np.unique(patients):
        members = np.flatnonzero(patients == patient)
        cols, rows = xs[members] // GRID + 1, ys[members] // GRID + 1
        grid = np.full((int(rows.max()) + 2, int(cols.max()) + 2), -1, np.int64)
        grid[rows, cols] = labels[members]
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                neighbour = grid[rows + dy, cols + dx]
                boundary[members] |= (neighbour >= 0) & (neighbour != labels[members])
    return boundary


def stacked(images: np.ndarray, context: np.ndarray | None) -> torch.Tensor:
    """(N, 3 or 6, 50, 50) uint8: the patch, then its context when there is one."""
    patches = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if context is None:
        return patches.contiguous()
    return torch.cat([patches, torch.from_numpy(context).permute(0, 3, 1, 2)], dim=1).contiguous()


def augment(batch: torch.Tensor, stain_jitter: float, generator: torch.Generator) -> torch.Tensor:
    """The same random flip/rotation, shift, colour and stain change for patch and context."""
    batch = random_crop(batch, (GRID, GRID), 4, generator, dihedral=True).float()
    # Side by side, each image's patch and context draw the same colour changes.
    wide = torch.cat(batch.split(3, dim=1), dim=3)  # (N, 3, 50, 50 or 100)
    wide = hed_jitter(wide, stain_jitter, generator)
    wide = color_jitter(wide, generator)
    return torch.cat(wide.split(GRID, dim=3), dim=1).clamp(0, 255)  # (N, 3 or 6, 50, 50)


def build_network(channels: int, dropout: float) -> nn.Module:
    """The ``deep`` network with ``channels`` input channels, in channels-last layout."""
    network = DeepCNN(num_classes=2, dropout=dropout)
    if channels != 3:
        first = network.features[0]
        network.features[0] = nn.Conv2d(
            channels, first.out_channels, kernel_size=3, padding=1, bias=False
        )
    return network.to(memory_format=torch.channels_last)


def scores(
    network: nn.Module, inputs: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> np.ndarray:
    """P(IDC) of every input, in batches."""
    network.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), 512):
            batch = (inputs[start : start + 512].float() / 255 - mean) / std
            logits = network(batch.contiguous(memory_format=torch.channels_last))
            out.append(torch.softmax(logits, dim=1)[:, 1])
    return torch.cat(out).numpy()


def patches_per_second(network: nn.Module, channels: int, seconds: float = 3.0) -> float:
    """Inference speed at batch 256 with this process's torch threads."""
    network.eval()
    batch = torch.randn(256, channels, GRID, GRID).contiguous(memory_format=torch.channels_last)
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < seconds:
            network(batch)
            done += len(batch)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="idc")
    parser.add_argument("--radius", type=int, default=2, help="context radius in patches (0: none)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=0.003)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--stain-jitter", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument(
        "--boundary-weight",
        type=float,
        default=1.0,
        help="loss weight of training patches next to a patch of the other label",
    )
    parser.add_argument(
        "--limit", type=int, default=0, help="use only this many patients per split"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    if args.radius < 0 or args.epochs < 1:
        parser.error("--radius must be >= 0 and --epochs >= 1")

    settings = get_settings()
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    splits = {}
    boundary = np.zeros(0, bool)
    for split in ("train", "validation", "test"):
        patches = dataset_patches(args.dataset, split, settings)
        images = np.asarray(patches.images)
        patients = np.asarray(patches.patient_ids)
        keep = np.ones(len(images), bool)
        if args.limit:
            keep = np.isin(patients, np.unique(patients)[: args.limit])
        images, patients = images[keep], patients[keep]
        xs, ys = np.asarray(patches.xs)[keep], np.asarray(patches.ys)[keep]
        context = context_images(images, patients, xs, ys, args.radius) if args.radius else None
        labels = np.asarray(patches.labels)[keep].astype(np.int64)
        splits[split] = (stacked(images, context), labels)
        if split == "train":
            boundary = on_label_boundary(labels, patients, xs, ys)
            print(f"train: {boundary.mean():.1%} of patches on a label boundary", flush=True)
        print(f"{split}: {len(images)} patches, {len(np.unique(patients))} patients", flush=True)

    train_inputs, train_labels = splits["train"]
    channels = train_inputs.shape[1]
    sample = torch.randperm(len(train_labels), generator=generator)[:4096]
    pixels = train_inputs[sample].float() / 255
    mean = pixels.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
    std = pixels.std(dim=(0, 2, 3)).view(1, -1, 1, 1)
    network = build_network(channels, args.dropout)
    optimizer = torch.optim.Adam(
        network.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay
    )
    counts = np.bincount(train_labels, minlength=2)
    weight = torch.tensor(len(train_labels) / (2 * counts), dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=weight, reduction="none")
    labels_t = torch.from_numpy(train_labels)
    # Each patch's share of the loss: its class weight, times the boundary weight.
    share = weight[labels_t] * torch.where(torch.from_numpy(boundary), args.boundary_weight, 1.0)
    steps = math.ceil(len(train_labels) / args.batch_size)
    best: dict[str, object] = {"auc": -1.0}
    history = []
    for epoch in range(args.epochs):
        for group in optimizer.param_groups:
            group["lr"] = args.learning_rate * 0.5 * (1 + math.cos(math.pi * epoch / args.epochs))
        network.train()
        started, total = time.perf_counter(), 0.0
        order = torch.randperm(len(train_labels), generator=generator)
        for step in range(steps):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            batch = augment(train_inputs[index], args.stain_jitter, generator)
            batch = ((batch / 255 - mean) / std).contiguous(memory_format=torch.channels_last)
            per_patch = criterion(network(batch), labels_t[index]) / weight[labels_t[index]]
            loss = (per_patch * share[index]).sum() / share[index].sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        val_inputs, val_labels = splits["validation"]
        probabilities = scores(network, val_inputs, mean, std)
        auc = point_metrics(val_labels, probabilities, 0.5)["roc_auc"]
        row = {
            "epoch": epoch + 1,
            "train_loss": total / steps,
            "validation_auc": auc,
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        print(json.dumps(row), flush=True)
        if auc > best["auc"]:  # type: ignore[operator]
            best = {
                "auc": auc,
                "epoch": epoch + 1,
                "state": {k: v.clone() for k, v in network.state_dict().items()},
            }

    network.load_state_dict(best["state"])  # type: ignore[arg-type]
    val_inputs, val_labels = splits["validation"]
    val_prob = scores(network, val_inputs, mean, std)
    threshold, val_bac = bac_optimal_threshold(val_labels, val_prob)
    test_inputs, test_labels = splits["test"]
    test_prob = scores(network, test_inputs, mean, std)
    test = point_metrics(test_labels, test_prob, threshold)
    results = {
        "radius": args.radius,
        "channels": channels,
        "best_epoch": best["epoch"],
        "validation_auc": point_metrics(val_labels, val_prob, threshold)["roc_auc"],
        "validation_best_bac": val_bac,
        "threshold_from_validation": threshold,
        "test_auc": test["roc_auc"],
        "test_bac": test["balanced_accuracy"],
        "test_f1": test["f1"],
        "patches_per_s": patches_per_second(network, channels),
        "patches_per_s_patch_only_network": patches_per_second(build_network(3, args.dropout), 3),
        "history": history,
        "arguments": {k: str(v) for k, v in vars(args).items()},
    }
    print(json.dumps({k: v for k, v in results.items() if k != "history"}, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
