"""Reassembling a patient's dataset patches into a slide and its ground truth."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.errors import InvalidInputError
from bcd.slides import open_slide, reassemble_patient, write_reassembled

PATIENT = "12933"  # a complete slide, 155 patches


def test_real_patient_reassembles_with_its_labels(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / PATIENT
    slide = reassemble_patient(folder)
    idc_files = list((folder / "1").glob("*.png"))
    all_files = list(folder.glob("[01]/*.png"))
    assert slide.patches == len(all_files) and slide.problems == []
    assert int((slide.truth == 1).sum()) == len(idc_files)
    assert int((slide.truth >= 0).sum()) == len(all_files)
    # A patch lands where its name says.
    name = sorted(idc_files)[0].name
    x = int(name.split("_x")[1].split("_")[0]) - slide.origin[0]
    y = int(name.split("_y")[1].split("_")[0]) - slide.origin[1]
    patch = np.asarray(Image.open(folder / "1" / name).convert("RGB"))
    np.testing.assert_array_equal(
        slide.image[y : y + patch.shape[0], x : x + patch.shape[1]], patch
    )
    assert slide.truth[y // 50, x // 50] == 1

    paths = write_reassembled(slide, tmp_path / "out")
    with open_slide(paths["slide.png"]) as reader:
        assert reader.mpp == pytest.approx(4.0, rel=1e-3)
        assert reader.dimensions == (slide.image.shape[1], slide.image.shape[0])
    np.testing.assert_array_equal(np.load(paths["truth.npy"]), slide.truth)
    meta = json.loads(paths["slide.json"].read_text())
    assert meta["patient_id"] == PATIENT and meta["idc_patches"] == len(idc_files)


def test_bad_files_are_reported_not_fatal(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / PATIENT
    shutil.copytree(shared_data / PATIENT, folder)
    (folder / "0" / "notes.png").write_bytes(b"x")
    victim = sorted((folder / "0").glob("*_class0.png"))[0]
    victim.write_bytes(b"\x89PNG broken")
    moved = sorted((folder / "1").glob("*.png"))[0]
    moved.rename(folder / "0" / moved.name)  # class 1 file under 0/
    slide = reassemble_patient(folder)
    problems = "\n".join(slide.problems)
    assert "notes.png: name does not follow" in problems
    assert f"{victim.name}: unreadable" in problems
    assert f"{moved.name}: class 1 but stored under 0/" in problems
    assert slide.patches == len(list((shared_data / PATIENT).glob("[01]/*.png"))) - 2


def test_dataset_root_is_refused_with_a_hint(shared_data: Path) -> None:
    with pytest.raises(InvalidInputError, match="one patient's folder"):
        reassemble_patient(shared_data)


def test_mixed_patients_are_refused(shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / "0").mkdir(parents=True)
    for patient in ("12933", "8863"):
        source = sorted((shared_data / patient / "0").glob("*.png"))[0]
        shutil.copy(source, folder / "0" / source.name)
    with pytest.raises(InvalidInputError, match="2 patients"):
        reassemble_patient(folder)
