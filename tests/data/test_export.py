"""Export to loose files, and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.config import Settings
from bcd.data import (
    ImportReport,
    SplitSpec,
    describe_dataset,
    export_dataset,
    import_dataset,
    open_split,
)
from bcd.errors import ConflictError, InvalidInputError


def test_imagefolder_export_holds_original_pixels(imported: ImportReport, tmp_path: Path) -> None:
    written = export_dataset("syn", tmp_path / "out", format="imagefolder")
    assert written == {name: info["patches"] for name, info in imported.splits.items()}
    train = open_split("syn", "train")
    table = train.manifest().to_pydict()
    assert {p.name for p in (tmp_path / "out" / "train").iterdir()} <= {"0", "1"}
    for index in range(len(train)):
        label = int(train.labels[index])
        name = Path(table["source_path"][index]).name
        pixels = np.asarray(Image.open(tmp_path / "out" / "train" / str(label) / name))
        width, height = table["width"][index], table["height"][index]
        assert pixels.shape == (height, width, 3)
        np.testing.assert_array_equal(pixels, train.images[index][:height, :width])


def test_lst_export_writes_lists(imported: ImportReport, tmp_path: Path) -> None:
    export_dataset("syn", tmp_path / "out", format="lst", splits=["test"])
    lines = (tmp_path / "out" / "test.lst").read_text().splitlines()
    assert len(lines) == imported.splits["test"]["patches"]
    index, label, path = lines[0].split("\t")
    assert index == "0" and label in ("0", "1") and (tmp_path / "out" / path).is_file()


def test_whole_export_round_trip_keeps_the_fingerprint(
    tree: Path, tmp_path: Path, settings: Settings
) -> None:
    first = import_dataset(tree, "one", settings=settings, split=None)
    export_dataset("one", tmp_path / "out", format="lst")
    # images/<split>/ is an IDC tree again, files at their original size.
    second = import_dataset(
        tmp_path / "out" / "images" / "all", "two", settings=settings, split=None
    )
    assert second.fingerprint == first.fingerprint and second.padded == first.padded


def test_export_refuses_a_non_empty_folder(imported: ImportReport, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ConflictError, match="not empty"):
        export_dataset("syn", tmp_path / "out")
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_unknown_format_is_refused(imported: ImportReport, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="imagefolder, lst"):
        export_dataset("syn", tmp_path / "out", format="tfrecord")


def test_split_spec_survives_export(imported: ImportReport) -> None:
    assert describe_dataset("syn")["split_config"] == SplitSpec((0.5, 0.25, 0.25), 7).config()
