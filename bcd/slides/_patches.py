"""Reassemble one patient's dataset patches into a slide and its ground-truth map.

The dataset cuts each whole-mount slide into 50x50 patches named
``<patient>_idx5_x<X>_y<Y>_class<C>.png`` under ``<patient>/<C>/``; X and Y
are the patch's corner in the slide. Putting them back gives a slide image
(white where no patch exists: the dataset keeps tissue only) and a tile map
of the pathologists' labels, so predicted and true IDC maps can be compared.
"""

from __future__ import annotations

import io
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from bcd.errors import InvalidInputError, NotFoundError
from bcd.slides._grid import MODEL_MPP, TILE_SIZE

logger = logging.getLogger(__name__)

_PATCH_NAME = re.compile(
    r"^(?P<patient>[A-Za-z0-9]+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])\.png$"
)
#: Ground-truth values in ``truth.png``: not annotated, no IDC, IDC.
TRUTH_PNG_VALUES = {-1: 0, 0: 128, 1: 255}


@dataclass
class ReassembledSlide:
    """A patient's patches put back together.

    Attributes:
        patient_id: The patient folder's id.
        image: uint8 ``(height, width, 3)`` slide, white where no patch exists.
        truth: int8 ``(rows, cols)`` labels per 50 px cell: 1 IDC, 0 no IDC, -1 no patch.
        origin: ``(x, y)`` dataset coordinates of the image's top-left pixel.
        patches: Number of patches placed.
        problems: Files that could not be used, with the reason.
    """

    patient_id: str
    image: np.ndarray
    truth: np.ndarray
    origin: tuple[int, int]
    patches: int
    problems: list[str] = field(default_factory=list)


def reassemble_patient(folder: str | Path) -> ReassembledSlide:
    """Reassemble ``<patient>/<0|1>/*.png`` into a slide image and truth map.

    Args:
        folder: One patient's folder of the dataset.

    Returns:
        The slide; unusable files are listed in ``problems``, never fatal.

    Raises:
        NotFoundError: If the folder does not exist.
        InvalidInputError: If it holds no patches of the dataset's naming, or
            patches of more than one patient.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotFoundError(f"patient folder {str(root)!r} does not exist")
    entries: list[tuple[int, int, int, Path]] = []
    problems: list[str] = []
    patients: set[str] = set()
    for path in sorted(root.glob("[01]/*.png")):
        match = _PATCH_NAME.match(path.name)
        if match is None:
            problems.append(
                f"{path.name}: name does not follow <patient>_idx5_x<X>_y<Y>_class<C>.png"
            )
            continue
        if match["label"] != path.parent.name:
            problems.append(
                f"{path.name}: class {match['label']} but stored under {path.parent.name}/"
            )
            continue
        patients.add(match["patient"])
        entries.append((int(match["x"]), int(match["y"]), int(match["label"]), path))
    if not entries:
        nested = [
            child.name for child in root.iterdir() if child.is_dir() and (child / "0").is_dir()
        ]
        hint = (
            f"; it looks like the dataset root (patients {', '.join(nested[:3])}, …): "
            "give one patient's folder"
            if nested
            else ""
        )
        raise InvalidInputError(f"{root} holds no patches under 0/ and 1/{hint}")
    if len(patients) > 1:
        raise InvalidInputError(
            f"{root} mixes patches of {len(patients)} patients; give one patient's folder"
        )
    x0 = min(entry[0] for entry in entries)
    y0 = min(entry[1] for entry in entries)
    placed: list[tuple[int, int, int, np.ndarray]] = []
    for x, y, label, path in entries:
        if (x - x0) % TILE_SIZE or (y - y0) % TILE_SIZE:
            problems.append(f"{path.name}: corner is off the {TILE_SIZE} px grid")
            continue
        try:
            with Image.open(path) as patch:
                pixels = np.asarray(patch.convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
            problems.append(f"{path.name}: unreadable ({error})")
            continue
        if pixels.shape[0] > TILE_SIZE or pixels.shape[1] > TILE_SIZE:
            problems.append(
                f"{path.name}: {pixels.shape[1]}x{pixels.shape[0]} px, larger than a patch"
            )
            continue
        placed.append((x - x0, y - y0, label, pixels))
    if not placed:
        raise InvalidInputError(f"no usable patch in {root}: {problems[:3]}")
    width = max(x + pixels.shape[1] for x, _, _, pixels in placed)
    height = max(y + pixels.shape[0] for _, y, _, pixels in placed)
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    truth = np.full((-(-height // TILE_SIZE), -(-width // TILE_SIZE)), -1, dtype=np.int8)
    for x, y, label, pixels in placed:
        image[y : y + pixels.shape[0], x : x + pixels.shape[1]] = pixels
        truth[y // TILE_SIZE, x // TILE_SIZE] = label
    if problems:
        logger.warning("%d patch files could not be used", len(problems))
    return ReassembledSlide(
        patient_id=next(iter(patients)),
        image=image,
        truth=truth,
        origin=(x0, y0),
        patches=len(placed),
        problems=problems,
    )


def write_reassembled(slide: ReassembledSlide, out_dir: str | Path) -> dict[str, Path]:
    """Save a reassembled slide: ``slide.png``, ``truth.npy``, ``truth.png``, ``slide.json``.

    ``slide.png`` records 0.25 µm/px (40x) in its resolution so readers find
    the magnification; ``truth.png`` holds one pixel per 50 px cell (0 = no
    patch, 128 = no IDC, 255 = IDC).

    Args:
        slide: The reassembled slide.
        out_dir: Folder to write into (created if missing).

    Returns:
        Output name → path.
    """
    from bcd.slides._outputs import atomic_write

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dpi = 25_400 / MODEL_MPP
    paths = {name: out / name for name in ("slide.png", "truth.npy", "truth.png", "slide.json")}
    atomic_write(
        paths["slide.png"],
        lambda handle: Image.fromarray(slide.image).save(handle, format="PNG", dpi=(dpi, dpi)),
    )
    atomic_write(
        paths["truth.npy"], lambda handle: np.save(handle, slide.truth, allow_pickle=False)
    )
    truth_png = np.zeros(slide.truth.shape, dtype=np.uint8)
    for value, grey in TRUTH_PNG_VALUES.items():
        truth_png[slide.truth == value] = grey
    atomic_write(
        paths["truth.png"],
        lambda handle: Image.fromarray(truth_png, "L").save(handle, format="PNG"),
    )
    meta = {
        "patient_id": slide.patient_id,
        "width": int(slide.image.shape[1]),
        "height": int(slide.image.shape[0]),
        "origin": list(slide.origin),
        "cell": TILE_SIZE,
        "mpp": MODEL_MPP,
        "patches": slide.patches,
        "idc_patches": int((slide.truth == 1).sum()),
        "problems": slide.problems,
    }
    atomic_write(
        paths["slide.json"], lambda handle: handle.write(json.dumps(meta, indent=2).encode())
    )
    return paths


def load_truth(data: bytes | str | Path) -> np.ndarray:
    """Read a ground-truth tile map from ``truth.npy`` or ``truth.png`` content.

    Args:
        data: File path, or the file's bytes (uploads).

    Returns:
        int8 ``(rows, cols)`` with -1/0/1.

    Raises:
        InvalidInputError: If it is neither a 2-D -1/0/1 ``.npy`` nor a
            0/128/255 grey PNG.
    """
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    if raw.startswith(b"\x93NUMPY"):
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)
        except ValueError as error:
            raise InvalidInputError(f"ground truth .npy could not be read ({error})") from error
        if array.ndim != 2 or not np.isin(array, (-1, 0, 1)).all():
            raise InvalidInputError("ground truth .npy must be a 2-D map of -1, 0 and 1")
        return array.astype(np.int8)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            grey = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise InvalidInputError(
            "ground truth must be truth.npy or truth.png as written by `bcd slide from-patches`"
        ) from error
    truth = np.full(grey.shape, -1, dtype=np.int8)
    truth[grey == TRUTH_PNG_VALUES[0]] = 0
    truth[grey == TRUTH_PNG_VALUES[1]] = 1
    unknown = ~np.isin(grey, list(TRUTH_PNG_VALUES.values()))
    if unknown.any():
        raise InvalidInputError(
            "ground truth PNG may only hold 0 (no patch), 128 (no IDC) and 255 (IDC)"
        )
    return truth


def describe(slide: ReassembledSlide) -> dict[str, Any]:
    """Counts for display: patches, IDC patches, size, problems."""
    return {
        "patient_id": slide.patient_id,
        "patches": slide.patches,
        "idc_patches": int((slide.truth == 1).sum()),
        "width": int(slide.image.shape[1]),
        "height": int(slide.image.shape[0]),
        "problems": len(slide.problems),
    }
