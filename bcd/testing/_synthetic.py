"""Synthetic IDC-layout patch trees: fixed seed, a class signal a small model can learn."""

from __future__ import annotations

import io
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from bcd.config import Settings

if TYPE_CHECKING:
    from bcd.data import ImportReport

PATCH = 50
# Mean RGB of H&E-like tissue: stroma and fat are light pink, IDC is dense purple.
_BACKGROUND = {0: np.array([228, 186, 214], np.float32), 1: np.array([172, 104, 178], np.float32)}
_NUCLEUS = np.array([92, 48, 128], np.float32)
_NUCLEI_PER_PATCH = {0: 3.0, 1: 11.0}
_YY, _XX = np.mgrid[0:PATCH, 0:PATCH]


def synthetic_patch(
    label: int, rng: np.random.Generator, stain_shift: np.ndarray | None = None
) -> np.ndarray:
    """One 50×50 RGB uint8 patch: IDC (1) is darker, more purple and crowded with nuclei.

    Args:
        label: 0 (no IDC) or 1 (IDC).
        rng: Random generator (fixes the patch).
        stain_shift: Per-patient RGB offset (stain variation between slides).

    Returns:
        (50, 50, 3) uint8.
    """
    image = np.empty((PATCH, PATCH, 3), np.float32)
    image[:] = _BACKGROUND[label] + (0 if stain_shift is None else stain_shift)
    count = rng.poisson(_NUCLEI_PER_PATCH[label])
    if count:
        centres = rng.uniform(0, PATCH, (count, 2, 1, 1))
        radii = rng.uniform(2.0, 4.5, (count, 1, 1))
        inside = ((_YY - centres[:, 0]) ** 2 + (_XX - centres[:, 1]) ** 2 <= radii**2).any(axis=0)
        image[inside] = _NUCLEUS + rng.normal(0, 10, 3)
    image += rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def make_synthetic_tree(
    root: str | Path,
    n_patients: int = 10,
    patches_per_patient: int = 30,
    seed: int = 0,
    *,
    small_patches: int = 3,
    first_patient_id: int = 90001,
    idc_fraction: tuple[float, float] = (0.15, 0.6),
) -> Path:
    """Write synthetic patches in the IDC folder layout.

    ``root/<patient>/<label>/<patient>_idx5_x<X>_y<Y>_class<label>.png``, patches on a
    50 px grid (x, y start at 1 like the real data). Each patient has an IDC region
    (a disk on its slide) covering a seeded fraction of its patches, so labels are
    spatially coherent and mosaics look like slides. The last ``small_patches``
    patches (spread over patients) are cut at the slide edge: smaller than 50×50.

    Args:
        root: Folder to write into (created; patient folders go directly inside).
        n_patients: Number of patients (ids ``first_patient_id`` upwards).
        patches_per_patient: Patches per patient.
        seed: Fixes every pixel and label.
        small_patches: How many edge patches smaller than 50×50 to include.
        first_patient_id: Id of the first patient.
        idc_fraction: Range of each patient's share of IDC patches.

    Returns:
        ``root``, the tree's root.
    """
    rng = np.random.default_rng(seed)
    tree = Path(root)
    tree.mkdir(parents=True, exist_ok=True)
    side = int(np.ceil(np.sqrt(patches_per_patient)))
    small_left = small_patches
    for number in range(n_patients):
        patient_id = str(first_patient_id + number)
        stain_shift = rng.normal(0, 6, 3).astype(np.float32)
        cells = np.array([(i % side, i // side) for i in range(patches_per_patient)])
        # IDC where the cell is among the nearest to a random centre.
        centre = rng.uniform(0, side, 2)
        distance = np.hypot(cells[:, 0] - centre[0], cells[:, 1] - centre[1])
        n_idc = round(rng.uniform(*idc_fraction) * patches_per_patient)
        labels = np.zeros(patches_per_patient, np.int64)
        labels[np.argsort(distance, kind="stable")[:n_idc]] = 1
        for index, (column, row) in enumerate(cells):
            label = int(labels[index])
            pixels = synthetic_patch(label, rng, stain_shift)
            if small_left > 0 and index == patches_per_patient - 1:
                # The slide's right edge cuts this patch.
                pixels = pixels[:, : int(rng.integers(1, PATCH))]
                small_left -= 1
            x, y = 1 + PATCH * int(column), 1 + PATCH * int(row)
            folder = tree / patient_id / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{patient_id}_idx5_x{x}_y{y}_class{label}.png"
            (folder / name).write_bytes(_png_bytes(pixels))
    return tree


def make_bad_files(root: str | Path, patient_id: str = "99999") -> dict[str, str]:
    """Add one file for each kind of bad input the importer must reject.

    Args:
        root: A tree's root (as from :func:`make_synthetic_tree`).
        patient_id: Patient folder to put them in.

    Returns:
        Relative path → a phrase the import report's reason contains.
    """
    tree = Path(root)
    rng = np.random.default_rng(1)
    good = _png_bytes(synthetic_patch(0, rng))
    files = {
        f"{patient_id}/0/{patient_id}_idx5_x1_y1_class0.png": (good[: len(good) // 2], "corrupt"),
        f"{patient_id}/0/{patient_id}_idx5_x51_y1_class0.png": (b"", "0 bytes"),
        f"{patient_id}/0/{patient_id}_idx5_x101_y1_class0.png": (
            b"patient notes, not pixels\n",
            "not an image",
        ),
        f"{patient_id}/0/scan_{patient_id}.png": (good, "does not match"),
        f"{patient_id}/1/{patient_id}_idx5_x151_y1_class0.png": (good, "disagrees"),
        f"{patient_id}/0/{patient_id}_idx5_x201_y1_class0.png": (
            _png_bytes(np.full((400, 300, 3), 255, np.uint8)),
            "absurd dimensions",
        ),
    }
    for relative, (content, _reason) in files.items():
        path = tree / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return {relative: reason for relative, (_content, reason) in files.items()}


def zip_tree(tree: str | Path, archive: str | Path, prefix: str = "IDC_regular_ps50_idx5/") -> Path:
    """Zip a tree like the Kaggle download (members under ``prefix``).

    Returns:
        The archive's path.
    """
    tree, archive = Path(tree), Path(archive)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        for file in sorted(tree.rglob("*")):
            if file.is_file():
                bundle.write(file, prefix + file.relative_to(tree).as_posix())
    return archive


def copy_real_patients(
    source_tree: str | Path, root: str | Path, patient_ids: Iterable[str]
) -> Path:
    """Copy some patients of a real IDC tree (e.g. ``../shared/data``) into ``root``.

    Returns:
        ``root``.
    """
    target = Path(root)
    for patient_id in patient_ids:
        shutil.copytree(Path(source_tree) / str(patient_id), target / str(patient_id))
    return target


def make_synthetic_dataset(
    name: str = "synthetic",
    settings: Settings | None = None,
    n_patients: int = 10,
    patches_per_patient: int = 30,
    *,
    split: Sequence[float] | None = (0.7, 0.15, 0.15),
    seed: int = 0,
    small_patches: int = 3,
    replace: bool = False,
) -> ImportReport:
    """Generate a synthetic tree, import it as ``name`` and split it by patient.

    After this, ``dataset://NAME/train`` (and ``validation``, ``test``) channels exist.

    Args:
        name: Dataset name.
        settings: Where the catalog and store are (default: environment).
        n_patients: Patients (at least one per split).
        patches_per_patient: Patches per patient.
        split: Split fractions, or ``None`` to import without splitting.
        seed: Fixes pixels, labels and the split.
        small_patches: Edge patches smaller than 50×50 (padded on import).
        replace: Overwrite an existing dataset of that name.

    Returns:
        The :class:`bcd.data.ImportReport`.
    """
    from bcd.data import SplitSpec, import_dataset

    with tempfile.TemporaryDirectory(prefix="bcd-synthetic-") as folder:
        tree = make_synthetic_tree(
            Path(folder) / "IDC_regular_ps50_idx5",
            n_patients,
            patches_per_patient,
            seed,
            small_patches=small_patches,
        )
        spec = None if split is None else SplitSpec(tuple(split), seed)
        return import_dataset(tree, name, settings=settings, replace=replace, split=spec, workers=0)
