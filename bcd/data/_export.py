"""``bcd data export``: write a dataset back as loose PNG files (for users who don't pack)."""

from __future__ import annotations

import io
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bcd.config import Settings, get_settings
from bcd.data._catalog import get_record
from bcd.data._channels import open_split
from bcd.data._patch_names import patch_file_name
from bcd.errors import ConflictError, InvalidInputError

EXPORT_FORMATS = ("imagefolder", "lst")


def export_dataset(
    name: str,
    out: str | Path,
    *,
    format: str = "imagefolder",
    splits: list[str] | None = None,
    settings: Settings | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, int]:
    """Write a dataset's splits as PNG files at their original size.

    ``imagefolder``: ``OUT/<split>/<label>/<patient>_idx5_x<X>_y<Y>_class<C>.png``.
    ``lst``: ``OUT/images/<split>/<patient>/<label>/<file>.png`` plus ``OUT/<split>.lst``
    (``index<TAB>label<TAB>path``, paths relative to ``OUT``), readable back with
    :func:`bcd.data.open_channel` (``OUT/train.lst``).

    Args:
        name: An imported dataset.
        out: A folder that does not exist yet (or is empty).
        format: ``imagefolder`` or ``lst``.
        splits: Which splits (default: every split, or ``all`` when unsplit).
        settings: Where the catalog and store are.
        progress: Optional ``(done, total)`` callback.

    Returns:
        Split name → files written.

    Raises:
        InvalidInputError: Unknown format.
        ConflictError: ``out`` exists and is not empty.
        NotFoundError: Unknown dataset or split.
    """
    if format not in EXPORT_FORMATS:
        raise InvalidInputError(
            f"unknown export format {format!r}; use one of {', '.join(EXPORT_FORMATS)}"
        )
    settings = settings or get_settings()
    record = get_record(name, settings)
    chosen = splits or sorted(record.splits or {}) or ["all"]
    target = Path(out).expanduser().resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConflictError(f"export folder {target} exists and is not empty; choose a new one")
    opened = {split: open_split(name, split, settings) for split in chosen}
    total = sum(len(data) for data in opened.values())
    staging = target.with_name(f".{target.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    written: dict[str, int] = {}
    done = 0
    try:
        for split, data in opened.items():
            sizes = data.manifest().select(["width", "height"]).to_pydict()
            lines = []
            for index in range(len(data)):
                label = int(data.labels[index])
                file_name = patch_file_name(
                    str(data.patient_ids[index]), int(data.xs[index]), int(data.ys[index]), label
                )
                if format == "imagefolder":
                    relative = f"{split}/{label}/{file_name}"
                else:
                    relative = f"images/{split}/{data.patient_ids[index]}/{label}/{file_name}"
                    lines.append(f"{index}\t{label}\t{relative}")
                w, h = int(sizes["width"][index]), int(sizes["height"][index])
                _write_png(staging / relative, np.asarray(data.images[index])[:h, :w])
                done += 1
                if progress is not None and (done % 512 == 0 or done == total):
                    progress(done, total)
            if format == "lst":
                (staging / f"{split}.lst").write_text("\n".join(lines) + "\n")
            written[split] = len(data)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return written


def _write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
