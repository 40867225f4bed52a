"""Train a small IDC classifier under the SageMaker script-mode contract.

This script does not import bcd: it runs unchanged as a bcd ``script`` job and
as a SageMaker PyTorch training job. It reads

- ``SM_CHANNEL_TRAIN`` and ``SM_CHANNEL_VALIDATION``: folders holding either a
  packed split (``images.u8`` raw uint8 of shape (N, 50, 50, 3) plus
  ``labels.npy``, as ``bcd data`` writes them) or an image folder
  (``0/*.png`` and ``1/*.png``, as ``bcd data export --format imagefolder``
  writes them);
- ``SM_MODEL_DIR``: where ``model.pt`` (a state dict) and ``model-info.json`` go;
- ``SM_HOSTS`` / ``SM_CURRENT_HOST``: only the first host trains;
- ``SM_NUM_CPUS``: torch threads;

takes its hyperparameters as ``--epochs 3 --batch-size 64 --learning-rate 0.001``
and prints one metric per line in its own format (``val_bac: 0.8123``); see
README.md for the matching ``metric_definitions``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=64)
    parser.add_argument("--learning-rate", "--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAIN"))
    parser.add_argument("--validation", default=os.environ.get("SM_CHANNEL_VALIDATION"))
    return parser.parse_args()


def load_channel(folder: str | None, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(N, 50, 50, 3) uint8 images and (N,) int64 labels of one channel folder."""
    if not folder or not Path(folder).is_dir():
        sys.exit(f"error: channel {name!r} folder {folder!r} is missing")
    root = Path(folder)
    if (root / "images.u8").is_file() and (root / "labels.npy").is_file():
        labels = np.load(root / "labels.npy", allow_pickle=False).astype(np.int64)
        images = np.fromfile(root / "images.u8", dtype=np.uint8)
        return images.reshape(len(labels), 50, 50, 3), labels
    from PIL import Image

    images, labels = [], []
    for label in (0, 1):
        for path in sorted((root / str(label)).glob("*.png")):
            canvas = np.full((50, 50, 3), 255, dtype=np.uint8)  # white pad for edge patches
            pixels = np.asarray(Image.open(path).convert("RGB"))[:50, :50]
            canvas[: pixels.shape[0], : pixels.shape[1]] = pixels
            images.append(canvas)
            labels.append(label)
    if not images:
        sys.exit(f"error: channel {name!r} folder {folder!r} holds no packed split or images")
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def build_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),  # (N, 32, 50, 50)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 32, 25, 25)
        nn.Conv2d(32, 64, 3, padding=1),  # (N, 64, 25, 25)
        nn.ReLU(),
        nn.MaxPool2d(2),  # (N, 64, 12, 12)
        nn.Flatten(),
        nn.Linear(64 * 12 * 12, 128),
        nn.ReLU(),
        nn.Dropout(0.4),
        nn.Linear(128, 2),  # logits
    )


def to_inputs(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(N, 50, 50, 3) uint8 → (N, 3, 50, 50) float32, normalised."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    return (tensor - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC by the rank-sum statistic (ties averaged)."""
    positives, negatives = int((labels == 1).sum()), int((labels != 1).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - counts + (counts + 1) / 2)[inverse]  # 1-based, ties averaged
    return (ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives)


def evaluate(model, images, labels, mean, std, criterion) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        logits = torch.cat(
            [model(to_inputs(images[i : i + 512], mean, std)) for i in range(0, len(images), 512)]
        )
    target = torch.from_numpy(labels)
    predictions = logits.argmax(1).numpy()
    recalls = [(predictions[labels == c] == c).mean() for c in np.unique(labels)]
    true_pos = int(((predictions == 1) & (labels == 1)).sum())
    denominator = int((predictions == 1).sum() + (labels == 1).sum())
    return {
        "val_loss": float(criterion(logits, target)),
        "val_acc": float((predictions == labels).mean()),
        "val_auc": auc(labels, torch.softmax(logits, 1)[:, 1].numpy()),
        "val_bac": float(np.mean(recalls)),
        "val_f1": 2 * true_pos / denominator if denominator else 0.0,
    }


def main() -> None:
    args = parse_args()
    hosts = json.loads(os.environ.get("SM_HOSTS", '["algo-1"]'))
    if os.environ.get("SM_CURRENT_HOST", hosts[0]) != hosts[0]:
        print("not the first host; nothing to do", flush=True)
        return
    torch.set_num_threads(int(os.environ.get("SM_NUM_CPUS", "2")))
    torch.manual_seed(args.seed)
    train_images, train_labels = load_channel(args.train, "train")
    val_images, val_labels = load_channel(args.validation, "validation")
    sample = train_images[:: max(1, len(train_images) // 5000)].astype(np.float32) / 255.0
    mean = torch.tensor(sample.mean(axis=(0, 1, 2)))
    std = torch.tensor(sample.std(axis=(0, 1, 2)) + 1e-3)
    counts = np.bincount(train_labels, minlength=2).astype(np.float32)
    weights = torch.tensor(len(train_labels) / (2 * np.maximum(counts, 1)))  # 2:1 imbalance
    criterion = nn.CrossEntropyLoss(weight=weights)
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    rng = np.random.default_rng(args.seed)
    best_bac, best_state = -1.0, None
    for epoch in range(1, args.epochs + 1):
        model.train()
        started, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        order = rng.permutation(len(train_labels))
        for start in range(0, len(order), args.batch_size):
            batch = np.sort(order[start : start + args.batch_size])
            inputs = to_inputs(train_images[batch], mean, std)
            flips = torch.rand(len(batch)) < 0.5
            inputs = torch.where(flips.view(-1, 1, 1, 1), inputs.flip(3), inputs)
            target = torch.from_numpy(train_labels[batch])
            logits = model(inputs)
            loss = criterion(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(batch)
            loss_sum += float(loss) * len(batch)
            correct += int((logits.argmax(1) == target).sum())
        metrics = evaluate(model, val_images, val_labels, mean, std, criterion)
        print(f"epoch: {epoch}", flush=True)
        print(f"train_loss: {loss_sum / seen:.4f}", flush=True)
        print(f"train_acc: {correct / seen:.4f}", flush=True)
        for name, value in metrics.items():
            print(f"{name}: {value:.4f}", flush=True)
        print(f"epoch_time: {time.time() - started:.1f}", flush=True)
        if metrics["val_bac"] > best_bac:
            best_bac = metrics["val_bac"]
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model_dir = Path(args.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    temporary = model_dir / "model.pt.tmp"
    torch.save(best_state, temporary)
    os.replace(temporary, model_dir / "model.pt")
    info = {"best_val_bac": best_bac, "mean": mean.tolist(), "std": std.tolist()}
    (model_dir / "model-info.json").write_text(json.dumps(info, indent=2))
    print(f"saved model with val_bac {best_bac:.4f}", flush=True)


if __name__ == "__main__":
    main()
