"""The importer on real patches from ../shared/data (a few patients by default)."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pytest

from bcd.config import Settings
from bcd.data import SplitSpec, dataset_stats, import_dataset, open_split
from bcd.testing import copy_real_patients

# Small patients; 12877 and 9174 have edge patches smaller than 50x50.
PATIENTS = ("9262", "12877", "9174")


def _manifest_rows(shared_data: Path, patients: set[str]) -> list[dict[str, str]]:
    with open(shared_data.parent / "idc-manifest.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["patient_id"] in patients]


def test_real_patients_match_the_manifest(
    shared_data: Path, tmp_path: Path, settings: Settings
) -> None:
    rows = _manifest_rows(shared_data, set(PATIENTS))
    tree = copy_real_patients(shared_data, tmp_path / "tree", PATIENTS)
    report = import_dataset(tree, "real", settings=settings, split=None)
    assert len(rows) == 75 and report.imported == len(rows) and report.rejected == []
    assert report.padded == sum(1 for r in rows if (r["width"], r["height"]) != ("50", "50")) == 5
    table = open_split("real", "all").manifest().to_pydict()
    by_path = {r["relpath"]: r for r in rows}
    for path, width, height in zip(
        table["source_path"], table["width"], table["height"], strict=True
    ):
        row = by_path[path]
        assert (str(width), str(height)) == (row["width"], row["height"])
        assert hashlib.md5((tree / path).read_bytes()).hexdigest() == row["md5"]


@pytest.mark.slow
def test_full_real_import(shared_data: Path, settings: Settings) -> None:
    report = import_dataset(
        shared_data, "idc", settings=settings, split=SplitSpec((0.7, 0.15, 0.15), 42)
    )
    assert (report.imported, report.patients, report.padded, len(report.rejected)) == (
        35924,
        187,
        336,
        0,
    )
    patients = [
        set(open_split("idc", s).patient_ids.tolist()) for s in ("train", "validation", "test")
    ]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    stats = dataset_stats("idc")
    assert stats["class_counts"] == {"0": 24123, "1": 11801}
