"""Splitting: by patient (disjoint, stratified, seeded), from a file, by patch (warns)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from bcd.data import (
    ImportReport,
    SplitSpec,
    describe_dataset,
    open_split,
    parse_fractions,
    split_dataset,
)
from bcd.data._split import check_disjoint, patient_split
from bcd.errors import BcdError, InvalidInputError, NotFoundError


def _patients(split: str, name: str = "syn") -> set[str]:
    return set(open_split(name, split).patient_ids.tolist())


def test_import_splits_by_patient_with_no_shared_patient(imported: ImportReport) -> None:
    splits = {name: _patients(name) for name in ("train", "validation", "test")}
    assert splits["train"].isdisjoint(splits["validation"])
    assert splits["train"].isdisjoint(splits["test"])
    assert splits["validation"].isdisjoint(splits["test"])
    assert set().union(*splits.values()) == _patients("all")
    total = sum(len(open_split("syn", name)) for name in splits)
    assert total == imported.imported
    for name, info in imported.splits.items():
        assert info["patients"] == len(splits[name])
        assert info["fingerprint"] == open_split("syn", name).fingerprint


def test_patient_split_follows_fractions_and_class_mix() -> None:
    rng = np.random.default_rng(0)
    sizes = rng.integers(20, 400, 120)
    patients = np.repeat([f"p{i}" for i in range(120)], sizes)
    shares = rng.uniform(0.05, 0.7, 120)
    labels = np.concatenate([rng.random(n) < share for n, share in zip(sizes, shares, strict=True)])
    labels = labels.astype(np.int64)
    assignment = patient_split(patients, labels, (0.7, 0.15, 0.15), seed=42)
    check_disjoint(assignment)
    overall = labels.mean()
    for name, fraction in zip(("train", "validation", "test"), (0.7, 0.15, 0.15), strict=True):
        mask = np.isin(patients, assignment[name])
        assert abs(mask.mean() - fraction) < 0.02, name
        assert abs(labels[mask].mean() - overall) < 0.02, name


def test_patient_split_is_seeded() -> None:
    patients = np.repeat([f"p{i}" for i in range(30)], 10)
    labels = np.tile([0, 1], 150)
    first = patient_split(patients, labels, (0.6, 0.2, 0.2), seed=1)
    assert first == patient_split(patients, labels, (0.6, 0.2, 0.2), seed=1)
    assert first != patient_split(patients, labels, (0.6, 0.2, 0.2), seed=2)


def test_every_split_gets_a_patient_even_when_tiny() -> None:
    patients = np.array(["a"] * 50 + ["b"] * 3 + ["c"] * 2)
    labels = np.zeros(55, np.int64)
    assignment = patient_split(patients, labels, (0.7, 0.15, 0.15), seed=0)
    assert all(assignment[name] for name in ("train", "validation", "test"))


def test_too_few_patients_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="cannot split 2 patient"):
        patient_split(np.array(["a", "b"]), np.array([0, 1]), (0.7, 0.15, 0.15), seed=0)


def test_overlap_is_caught() -> None:
    with pytest.raises(BcdError, match="both train and test"):
        check_disjoint({"train": ["1", "2"], "test": ["2"]})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.7,0.2", "sum to 1"),
        ("1", "needs 2"),
        ("a,b", "not a list of numbers"),
        ("0.5,0.5,0,0", "needs 2"),
        ("1.2,-0.2", "positive"),
        ("nan,0.5", "positive"),
    ],
)
def test_bad_fractions_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_fractions(text)


def test_two_way_split(imported: ImportReport) -> None:
    splits = split_dataset("syn", SplitSpec((0.75, 0.25), 3))
    assert set(splits) == {"train", "validation"}
    with pytest.raises(NotFoundError, match="no split 'test'"):
        open_split("syn", "test")


def test_resplit_replaces_the_old_splits(imported: ImportReport) -> None:
    before = describe_dataset("syn")
    split_dataset("syn", SplitSpec((0.5, 0.25, 0.25), 1234))
    after = describe_dataset("syn")
    assert after["split_location"] != before["split_location"]
    assert after["split_config"]["seed"] == 1234 and after["fingerprint"] == before["fingerprint"]


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_split_file_reproduces_explicit_lists(
    imported: ImportReport, tmp_path: Path, kind: str
) -> None:
    patients = sorted(_patients("all"))
    wanted = {"train": patients[:4], "validation": patients[4:6], "test": patients[6:]}
    path = tmp_path / f"split.{kind}"
    if kind == "json":
        path.write_text(json.dumps(wanted))
    else:
        rows = [f"{p},{split}" for split, members in wanted.items() for p in members]
        path.write_text("patient_id,split\n" + "\n".join(rows) + "\n")
    split_dataset("syn", SplitSpec(split_file=str(path)))
    for split, members in wanted.items():
        assert _patients(split) == set(members)
    assert describe_dataset("syn")["split_config"]["mode"] == "file"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"train": ["90001"], "test": ["90001"]}, "listed twice"),
        ({"train": ["12345"]}, "not in the dataset"),
        ({"train": ["90001"]}, "unassigned"),
        ({"holdout": ["90001"]}, "unknown split"),
    ],
    ids=["twice", "unknown-patient", "missing-patients", "unknown-split"],
)
def test_bad_split_files_are_refused(
    imported: ImportReport, tmp_path: Path, content: dict[str, list[str]], message: str
) -> None:
    path = tmp_path / "split.json"
    path.write_text(json.dumps(content))
    with pytest.raises(InvalidInputError, match=message):
        split_dataset("syn", SplitSpec(split_file=str(path)))


def test_missing_split_file_is_not_found(imported: ImportReport, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        split_dataset("syn", SplitSpec(split_file=str(tmp_path / "nope.json")))


def test_patch_split_warns_and_mixes_patients(
    imported: ImportReport, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        splits = split_dataset("syn", SplitSpec((0.6, 0.2, 0.2), 5, by_patch=True))
    assert "overstates accuracy" in caplog.text
    assert sum(info["patches"] for info in splits.values()) == imported.imported
    assert _patients("train") & _patients("test"), "a patch split should share patients"
    assert describe_dataset("syn")["split_config"]["mode"] == "patch"


def test_split_of_unknown_dataset_is_not_found() -> None:
    with pytest.raises(NotFoundError):
        split_dataset("nope")
