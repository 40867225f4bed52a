"""Exploring a dataset: counts, sizes and normalization stats; sample grids; slide mosaics."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bcd.config import Settings, get_settings
from bcd.data._catalog import get_record
from bcd.data._channels import open_split
from bcd.data._packed import PackedSplit
from bcd.data._patch_names import PATCH_SIZE
from bcd.errors import InvalidInputError, NotFoundError

CLASS_NAMES = {0: "no IDC", 1: "IDC"}
_IDC_TINT = np.array([230, 20, 40], np.float32)


def dataset_stats(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """Counts per split, class and patient; original sizes; normalization stats.

    Args:
        name: An imported dataset.
        settings: Where the catalog and store are.

    Returns:
        A dict with ``patches``, ``patients``, ``class_counts``, ``splits`` (per split:
        patches, patients, class counts), ``per_patient`` (one row per patient with
        its split), ``sizes`` (original ``WxH`` → count), ``channel_mean`` and
        ``channel_std`` (0–1 scale, from the ``train`` split when there is one) and
        ``normalization_split``.

    Raises:
        NotFoundError: Unknown dataset.
    """
    settings = settings or get_settings()
    record = get_record(name, settings)
    everything = open_split(name, "all", settings)
    manifest = everything.manifest().select(["patient_id", "label", "width", "height"])
    columns = manifest.to_pydict()
    split_of: dict[str, str] = {}
    splits: dict[str, Any] = {}
    for split in record.splits or {}:
        part = open_split(name, split, settings)
        for patient in np.unique(part.patient_ids).tolist():
            split_of.setdefault(patient, split)
        splits[split] = _counts(part)
    per_patient: dict[str, Counter[int]] = {}
    for patient, label in zip(columns["patient_id"], columns["label"], strict=True):
        per_patient.setdefault(patient, Counter())[int(label)] += 1
    sizes = Counter(f"{w}x{h}" for w, h in zip(columns["width"], columns["height"], strict=True))
    basis = "train" if "train" in splits else "all"
    mean, std = (
        open_split(name, basis, settings) if basis != "all" else everything
    ).channel_stats()
    return {
        "name": name,
        "fingerprint": record.fingerprint,
        **_counts(everything),
        "splits": splits,
        "split_config": record.split_config,
        "per_patient": [
            {
                "patient_id": patient,
                "patches": counts[0] + counts[1],
                "no_idc": counts[0],
                "idc": counts[1],
                "split": split_of.get(patient),
            }
            for patient, counts in sorted(per_patient.items(), key=lambda item: _natural(item[0]))
        ],
        "sizes": dict(sorted(sizes.items(), key=lambda item: -item[1])),
        "padded": int(sum(count for size, count in sizes.items() if size != "50x50")),
        "channel_mean": mean,
        "channel_std": std,
        "normalization_split": basis,
    }


def _counts(split: PackedSplit) -> dict[str, Any]:
    counts = split.class_counts()
    return {
        "patches": len(split),
        "patients": len(np.unique(split.patient_ids)),
        "class_counts": {str(label): counts.get(label, 0) for label in (0, 1)},
    }


def _natural(patient_id: str) -> tuple[int, str]:
    return (int(patient_id), "") if patient_id.isdigit() else (1 << 62, patient_id)


def _save_png(image: Image.Image, path: str | Path) -> Path:
    target = Path(path).expanduser()
    if target.suffix.lower() != ".png":
        raise InvalidInputError(f"output {path} must be a .png file")
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    image.save(temporary, format="PNG")
    os.replace(temporary, target)
    return target


def render_grid(
    name: str,
    path: str | Path,
    *,
    split: str = "all",
    per_class: int = 32,
    columns: int = 8,
    zoom: int = 2,
    seed: int = 0,
    settings: Settings | None = None,
) -> Path:
    """Write a PNG with a random sample of patches of each class, one block per class.

    Args:
        name: An imported dataset.
        path: The ``.png`` to write.
        split: Which split to sample.
        per_class: Patches per class.
        columns: Patches per row.
        zoom: Integer upscaling of each patch (nearest neighbour).
        seed: Seed of the sample.
        settings: Where the catalog and store are.

    Returns:
        The path written.

    Raises:
        NotFoundError: Unknown dataset or split.
        InvalidInputError: A non-PNG path or non-positive sizes.
    """
    if per_class < 1 or columns < 1 or zoom < 1:
        raise InvalidInputError("per_class, columns and zoom must be at least 1")
    data = open_split(name, split, settings)
    rng = np.random.default_rng(seed)
    cell = PATCH_SIZE * zoom + 4
    rows = -(-per_class // columns)
    header = 22
    block = header + rows * cell
    canvas = Image.new("RGB", (columns * cell + 8, 2 * block + 8), "white")
    draw = ImageDraw.Draw(canvas)
    for block_index, label in enumerate((0, 1)):
        members = np.flatnonzero(data.labels == label)
        chosen = np.sort(rng.choice(members, min(per_class, len(members)), replace=False))
        top = 4 + block_index * block
        draw.text(
            (6, top + 4),
            f"label {label}: {CLASS_NAMES[label]} ({len(members)} patches, {len(chosen)} shown)",
            fill="black",
        )
        for position, index in enumerate(chosen):
            patch = Image.fromarray(np.asarray(data.images[index])).resize(
                (PATCH_SIZE * zoom, PATCH_SIZE * zoom), Image.Resampling.NEAREST
            )
            row, column = divmod(position, columns)
            canvas.paste(patch, (4 + column * cell + 2, top + header + row * cell + 2))
    return _save_png(canvas, path)


def render_mosaic(
    name: str,
    patient_id: str,
    path: str | Path,
    *,
    overlay: bool = True,
    max_side: int = 2048,
    settings: Settings | None = None,
) -> Path:
    """Reassemble a patient's slide from patch coordinates, IDC patches tinted red.

    Missing patches (patients that are a sample, not a complete slide) stay white.

    Args:
        name: An imported dataset.
        patient_id: The patient.
        path: The ``.png`` to write.
        overlay: Tint IDC (label 1) patches and outline them.
        max_side: Downscale so the longer side is at most this many pixels.
        settings: Where the catalog and store are.

    Returns:
        The path written.

    Raises:
        NotFoundError: Unknown dataset, or a patient not in it.
        InvalidInputError: A non-PNG path or ``max_side`` < 50.
    """
    if max_side < PATCH_SIZE:
        raise InvalidInputError(f"max_side must be at least {PATCH_SIZE}")
    data = open_split(name, "all", settings)
    members = np.flatnonzero(data.patient_ids == str(patient_id))
    if len(members) == 0:
        known = sorted(np.unique(data.patient_ids).tolist(), key=_natural)
        raise NotFoundError(
            f"patient {patient_id!r} is not in dataset {name!r} "
            f"({len(known)} patients, e.g. {', '.join(known[:6])})"
        )
    sizes = data.manifest().select(["width", "height"]).take(members).to_pydict()
    xs, ys = data.xs[members], data.ys[members]
    left, top = int(xs.min()), int(ys.min())
    width = int(xs.max()) - left + PATCH_SIZE
    height = int(ys.max()) - top + PATCH_SIZE
    legend = 28
    slide = np.full((height, width, 3), 255, np.uint8)
    idc = 0
    for row, index in enumerate(members):
        patch = np.asarray(data.images[index]).astype(np.float32)
        w, h = int(sizes["width"][row]), int(sizes["height"][row])
        if overlay and data.labels[index] == 1:
            patch = 0.6 * patch + 0.4 * _IDC_TINT
            patch[[0, h - 1], :w] = _IDC_TINT
            patch[:h, [0, w - 1]] = _IDC_TINT
            idc += 1
        x, y = int(xs[row]) - left, int(ys[row]) - top
        slide[y : y + h, x : x + w] = patch[:h, :w].astype(np.uint8)
    image = Image.fromarray(slide)
    scale = min(1.0, max_side / max(width, height))
    if scale < 1.0:
        image = image.resize(
            (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BOX
        )
    canvas = Image.new("RGB", (image.width, image.height + legend), "white")
    canvas.paste(image, (0, 0))
    caption = f"patient {patient_id}: {len(members)} patches"
    if overlay:
        caption += f", IDC (red) {idc}"
    ImageDraw.Draw(canvas).text((6, image.height + 8), caption, fill="black")
    return _save_png(canvas, path)
