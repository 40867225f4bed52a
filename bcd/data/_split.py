"""Splitting a dataset: by patient (stratified by class, seeded), from a file, or by patch.

Patches of one patient are strongly correlated, so a patch-level split leaks
the test set into training and overstates accuracy; patient-level splitting is
the default and the only mode that does not warn.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from bcd.config import Settings, get_settings
from bcd.data._catalog import (
    get_record,
    new_version,
    publish_folder,
    remove_folders,
    remove_orphans,
    staging_folder,
)
from bcd.data._channels import open_location
from bcd.data._packed import PackedSplit, write_subset
from bcd.db import session_scope, utcnow
from bcd.errors import BcdError, ConflictError, InvalidInputError, NotFoundError
from bcd.storage import BaseArtifactStore, dataset_store

logger = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.7, 0.15, 0.15)


def parse_fractions(text: str | Sequence[float]) -> tuple[float, ...]:
    """Parse ``"0.7,0.15,0.15"`` (or a sequence) into 2 or 3 fractions summing to 1.

    Raises:
        InvalidInputError: For non-numbers, non-positive values, a wrong count or sum.
    """
    if isinstance(text, str):
        try:
            fractions = tuple(float(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise InvalidInputError(
                f"split {text!r} is not a list of numbers; use e.g. 0.7,0.15,0.15"
            ) from None
    else:
        fractions = tuple(float(value) for value in text)
    if len(fractions) not in (2, 3):
        raise InvalidInputError(
            f"split needs 2 (train, validation) or 3 (train, validation, test) fractions; "
            f"got {len(fractions)}"
        )
    if any(not math.isfinite(value) or value <= 0 for value in fractions):
        raise InvalidInputError(f"split fractions must be positive; got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise InvalidInputError(
            f"split fractions must sum to 1; {fractions} sums to {sum(fractions):g}"
        )
    return fractions


def patient_split(
    patient_ids: np.ndarray, labels: np.ndarray, fractions: Sequence[float], seed: int
) -> dict[str, list[str]]:
    """Assign whole patients to splits, keeping each split's patch count and class mix
    close to the targets.

    Patients are visited largest first (ties in a seeded random order) and each
    goes to the split that most lacks patches of the classes the patient brings.

    Args:
        patient_ids: (N,) patient of each patch.
        labels: (N,) label of each patch.
        fractions: 2 or 3 fractions (train, validation[, test]).
        seed: Seed of the random order.

    Returns:
        Split name → sorted patient ids.

    Raises:
        InvalidInputError: When there are fewer patients than splits.
    """
    names = SPLIT_NAMES[: len(fractions)]
    patients, inverse = np.unique(np.asarray(patient_ids, str), return_inverse=True)
    if len(patients) < len(names):
        raise InvalidInputError(
            f"cannot split {len(patients)} patient(s) into {len(names)} splits by patient; "
            "import more patients, use fewer splits (e.g. 0.8,0.2), or import with --no-split"
        )
    per_patient = np.zeros((len(patients), 2), np.int64)
    np.add.at(per_patient, (inverse, np.asarray(labels, np.int64).clip(0, 1)), 1)
    totals = per_patient.sum(axis=0).clip(min=1)
    targets = np.outer(np.asarray(fractions), per_patient.sum(axis=0))  # (splits, 2)
    current = np.zeros_like(targets)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    sizes = per_patient.sum(axis=1)
    order = order[np.argsort(-np.floor(np.log2(sizes[order])), kind="stable")]
    assigned = np.empty(len(patients), np.int64)
    for patient in order:
        counts = per_patient[patient]
        # Need of each split for what this patient brings, relative to class totals.
        need = ((targets - current) / totals * counts).sum(axis=1)
        choice = int(np.argmax(need))
        assigned[patient] = choice
        current[choice] += counts
    _fill_empty_splits(assigned, sizes, len(names))
    return {name: sorted(patients[assigned == i].tolist()) for i, name in enumerate(names)}


def _fill_empty_splits(assigned: np.ndarray, sizes: np.ndarray, n_splits: int) -> None:
    # Tiny datasets: move the smallest patient of the most populated split into
    # each empty split, so every requested split has data.
    for empty in range(n_splits):
        if np.any(assigned == empty):
            continue
        donor = int(np.argmax(np.bincount(assigned, minlength=n_splits)))
        candidates = np.flatnonzero(assigned == donor)
        assigned[candidates[np.argmin(sizes[candidates])]] = empty


def patch_split(labels: np.ndarray, fractions: Sequence[float], seed: int) -> dict[str, np.ndarray]:
    """A class-stratified random split of patches (not patients): leaks patients across splits.

    Returns:
        Split name → sorted record indices.
    """
    logger.warning(
        "splitting by patch: patches of one patient land in several splits, "
        "which overstates accuracy; split by patient for any reported result"
    )
    names = SPLIT_NAMES[: len(fractions)]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        bounds = np.round(np.cumsum(fractions) * len(members)).astype(int)
        for name, start, stop in zip(names, [0, *bounds[:-1]], bounds, strict=True):
            parts[name].append(members[start:stop])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def read_split_file(path: str | Path, known_patients: Sequence[str]) -> dict[str, list[str]]:
    """Read explicit patient lists, to reproduce a published split.

    Accepted forms: JSON ``{"train": [...], "validation": [...], "test": [...]}``,
    or CSV with columns ``patient_id,split``.

    Args:
        path: The file.
        known_patients: The dataset's patients; every one must be listed exactly once.

    Returns:
        Split name → sorted patient ids.

    Raises:
        NotFoundError: When the file does not exist.
        InvalidInputError: Unknown split names, patients listed twice, missing or unknown.
    """
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"split file {path} does not exist")
    try:
        if file.suffix.lower() == ".json":
            raw = json.loads(file.read_text())
            if not isinstance(raw, dict):
                raise InvalidInputError(f"{path}: expected an object of split name → patients")
            pairs = [(str(p), str(split)) for split, ps in raw.items() for p in ps]
        else:
            with open(file, newline="") as handle:
                rows = list(csv.DictReader(handle))
            if not rows or not {"patient_id", "split"} <= set(rows[0]):
                raise InvalidInputError(f"{path}: a CSV split file needs columns patient_id,split")
            pairs = [(row["patient_id"].strip(), row["split"].strip()) for row in rows]
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as exc:
        raise InvalidInputError(f"{path} is not a valid split file ({exc})") from exc
    splits: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for patient, split in pairs:
        if split not in SPLIT_NAMES:
            raise InvalidInputError(
                f"{path}: unknown split {split!r}; use {', '.join(SPLIT_NAMES)}"
            )
        if patient in seen:
            raise InvalidInputError(
                f"{path}: patient {patient} is listed twice ({seen[patient]} and {split})"
            )
        seen[patient] = split
        splits.setdefault(split, []).append(patient)
    known = set(known_patients)
    unknown = sorted(set(seen) - known)
    missing = sorted(known - set(seen))
    if unknown:
        raise InvalidInputError(
            f"{path} lists {len(unknown)} patient(s) not in the dataset, e.g. {unknown[:5]}"
        )
    if missing:
        raise InvalidInputError(
            f"{path} leaves {len(missing)} patient(s) of the dataset unassigned, e.g. "
            f"{missing[:5]}; list every patient"
        )
    return {name: sorted(splits[name]) for name in SPLIT_NAMES if name in splits}


def check_disjoint(assignment: dict[str, list[str]]) -> None:
    """Fail loudly when any patient is in two splits.

    Raises:
        BcdError: On overlap (a bug, never expected).
    """
    seen: dict[str, str] = {}
    for split, patients in assignment.items():
        for patient in patients:
            if patient in seen:
                raise BcdError(f"patient {patient} is in both {seen[patient]} and {split}")
            seen[patient] = split


@dataclass(frozen=True)
class SplitSpec:
    """How to split a dataset.

    Attributes:
        fractions: 2 or 3 fractions (train, validation[, test]) summing to 1.
        seed: Seed of the random assignment.
        split_file: Explicit patient lists (JSON or CSV); overrides ``fractions``.
        by_patch: Split patches at random instead of patients (warns; leaks patients).
    """

    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seed: int = 42
    split_file: str | None = None
    by_patch: bool = False

    def config(self) -> dict[str, Any]:
        """What is recorded in the catalog about this split."""
        mode = "file" if self.split_file else "patch" if self.by_patch else "patient"
        return {
            "mode": mode,
            "fractions": list(self.fractions),
            "seed": self.seed,
            "split_file": str(self.split_file) if self.split_file else None,
        }


def assign(everything: PackedSplit, spec: SplitSpec) -> dict[str, np.ndarray]:
    """Record indices of each split of ``everything`` following ``spec``.

    Raises:
        InvalidInputError: For an invalid spec (see :func:`parse_fractions`,
            :func:`read_split_file`, :func:`patient_split`).
    """
    if spec.split_file and spec.by_patch:
        raise InvalidInputError("a split file lists patients; it cannot be combined with by-patch")
    if spec.by_patch:
        return patch_split(everything.labels, parse_fractions(spec.fractions), spec.seed)
    patients = everything.patient_ids
    if spec.split_file:
        assignment = read_split_file(spec.split_file, np.unique(patients).tolist())
    else:
        assignment = patient_split(
            patients, everything.labels, parse_fractions(spec.fractions), spec.seed
        )
    check_disjoint(assignment)
    return {
        split: np.flatnonzero(np.isin(patients, np.asarray(members, dtype=str)))
        for split, members in assignment.items()
    }


@contextlib.contextmanager
def stage_splits(
    store: BaseArtifactStore, name: str, everything: PackedSplit, spec: SplitSpec
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Write the splits of ``everything`` as packed folders under a new ``split-*`` key.

    The folder is in place (not yet referenced) when the block runs; the caller
    commits the catalog row inside the block. On error the folder is removed.

    Yields:
        ``(split_key, info)`` with ``info["splits"]`` (per-split counts and
        fingerprints) and ``info["config"]``.
    """
    indices = assign(everything, spec)
    split_key = f"{name}/{new_version('split')}"
    info: dict[str, Any] = {"splits": {}, "config": spec.config()}
    with staging_folder(store, name) as staged:
        for split, members in indices.items():
            meta = write_subset(
                everything, members, staged / split, {"dataset": name, "split": split}
            )
            info["splits"][split] = {
                "patches": meta["count"],
                "patients": meta["patients"],
                "class_counts": meta["class_counts"],
                "fingerprint": meta["fingerprint"],
            }
        seen = [set(PackedSplit.open(staged / split).patient_ids.tolist()) for split in indices]
        if spec.config()["mode"] != "patch":
            for i, first in enumerate(seen):
                for second in seen[i + 1 :]:
                    if first & second:
                        raise BcdError(f"patients {sorted(first & second)[:5]} are in two splits")
        (staged / "split.json").write_text(json.dumps(info, indent=2))
        publish_folder(store, staged, split_key)
    try:
        yield split_key, info
    except BaseException:
        remove_folders(store, [split_key])
        raise


def split_dataset(
    name: str, spec: SplitSpec = SplitSpec(), settings: Settings | None = None
) -> dict[str, Any]:
    """Split (or re-split) an imported dataset; the new splits replace the old ones atomically.

    Args:
        name: The dataset.
        spec: Fractions and seed, a split file, or a patch split.
        settings: Where the catalog and store are.

    Returns:
        Split name → ``{"patches", "patients", "class_counts", "fingerprint"}``.

    Raises:
        NotFoundError: Unknown dataset.
        InvalidInputError: Invalid spec.
        ConflictError: The dataset was re-imported while splitting.
    """
    from bcd.data._tables import DatasetRecord

    settings = settings or get_settings()
    record = get_record(name, settings)
    store = dataset_store(settings)
    everything = open_location(store, f"{record.location}/all", settings)
    with (
        stage_splits(store, name, everything, spec) as (split_key, info),
        session_scope(settings) as session,
    ):
        current = session.scalars(select(DatasetRecord).where(DatasetRecord.name == name)).first()
        if current is None or current.location != record.location:
            raise ConflictError(
                f"dataset {name!r} was deleted or re-imported while splitting; split it again"
            )
        previous = current.split_location
        current.split_location = split_key
        current.splits = info["splits"]
        current.split_config = info["config"]
        current.updated_at = utcnow()
    remove_folders(store, [previous])
    remove_orphans(settings, name)
    return dict(info["splits"])
