"""``import_dataset``: validation, padding, the report, re-import rules, zip sources."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.config import Settings
from bcd.data import (
    PAD_VALUE,
    ImportReport,
    describe_dataset,
    import_dataset,
    list_datasets,
    open_split,
    read_import_report,
)
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from bcd.testing import make_bad_files, make_synthetic_tree, zip_tree


def _small_files(tree: Path) -> dict[str, tuple[int, int]]:
    sizes = {}
    for file in tree.rglob("*.png"):
        with Image.open(file) as image:
            if image.size != (50, 50):
                sizes[file.relative_to(tree).as_posix()] = image.size
    return sizes


def test_import_counts_every_patch(imported: ImportReport, tree: Path) -> None:
    assert imported.files == 160
    assert imported.imported == 160
    assert imported.patients == 8
    assert imported.padded == len(_small_files(tree)) == 3
    assert imported.rejected == [] and imported.skipped == []
    labels = [int(p.parent.name) for p in tree.rglob("*.png")]
    assert imported.class_counts == {"0": labels.count(0), "1": labels.count(1)}
    assert imported.fingerprint.startswith("sha256:")


def test_packed_pixels_equal_the_decoded_pngs(imported: ImportReport, tree: Path) -> None:
    everything = open_split("syn", "all")
    table = everything.manifest().to_pydict()
    for index in (0, 37, 159):
        source = tree / table["source_path"][index]
        original = np.asarray(Image.open(source).convert("RGB"))
        height, width = original.shape[:2]
        assert (table["width"][index], table["height"][index]) == (width, height)
        np.testing.assert_array_equal(everything.images[index][:height, :width], original)


def test_small_patches_are_padded_white_top_left(imported: ImportReport, tree: Path) -> None:
    everything = open_split("syn", "all")
    table = everything.manifest().to_pydict()
    padded = [i for i, flag in enumerate(table["padded"]) if flag]
    assert len(padded) == 3
    for index in padded:
        width, height = table["width"][index], table["height"][index]
        image = everything.images[index]
        original = np.asarray(Image.open(tree / table["source_path"][index]).convert("RGB"))
        np.testing.assert_array_equal(image[:height, :width], original)
        assert (image[:, width:] == PAD_VALUE).all() and (image[height:, :] == PAD_VALUE).all()


def test_on_small_skip_lists_the_skipped(tree: Path, settings: Settings) -> None:
    report = import_dataset(tree, "skipped", settings=settings, on_small="skip", split=None)
    assert report.imported == 157 and report.padded == 0
    assert sorted(path for path, _ in report.skipped) == sorted(_small_files(tree))
    assert all("smaller than 50x50" in reason for _, reason in report.skipped)


def test_every_bad_file_is_reported_with_its_reason(tree: Path, settings: Settings) -> None:
    expected = make_bad_files(tree)
    report = import_dataset(tree, "with-bad", settings=settings, split=None)
    assert report.imported == 160
    reasons = dict((path, reason) for path, reason in report.rejected)
    assert set(reasons) == set(expected)
    for path, phrase in expected.items():
        assert phrase in reasons[path], (path, reasons[path])
    stored = read_import_report("with-bad")
    assert sorted(map(tuple, stored["rejected"])) == sorted(reasons.items())
    assert describe_dataset("with-bad")["rejected"] == len(expected)


def test_reimport_is_refused_without_replace(imported: ImportReport, tree: Path) -> None:
    with pytest.raises(ConflictError, match="--replace"):
        import_dataset(tree, "syn", split=None)


def test_replace_swaps_the_dataset_and_removes_old_files(
    imported: ImportReport, tmp_path: Path, settings: Settings
) -> None:
    old = describe_dataset("syn")
    other = make_synthetic_tree(tmp_path / "other", n_patients=4, patches_per_patient=10, seed=3)
    report = import_dataset(other, "syn", settings=settings, replace=True, split=None)
    new = describe_dataset("syn")
    assert new["patches"] == report.imported == 40 and new["splits"] == {}
    assert new["fingerprint"] != old["fingerprint"]
    assert len(open_split("syn", "all")) == 40
    remaining = sorted(p.name for p in (Path(settings.resolved_dataset_root) / "syn").iterdir())
    assert remaining == [new["location"].split("/")[1]]


def test_unknown_dataset_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="bcd data import"):
        open_split("nope", "train")
    with pytest.raises(NotFoundError):
        describe_dataset("nope")


@pytest.mark.parametrize("name", ["", "has space", "under_score", "-x", "x" * 64])
def test_bad_dataset_names_are_refused(tree: Path, name: str) -> None:
    with pytest.raises(InvalidInputError, match="dataset name"):
        import_dataset(tree, name)
    assert list_datasets() == []


def test_bad_on_small_is_refused(tree: Path) -> None:
    with pytest.raises(InvalidInputError, match="on_small"):
        import_dataset(tree, "x", on_small="crop")


def test_missing_source_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        import_dataset(tmp_path / "nowhere", "x")


def test_a_file_that_is_not_a_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(InvalidInputError, match="neither a folder nor a zip"):
        import_dataset(path, "x")


def test_a_tree_without_patches_is_refused_and_leaves_nothing(
    tmp_path: Path, settings: Settings
) -> None:
    empty = tmp_path / "empty"
    (empty / "1").mkdir(parents=True)
    (empty / "1" / "readme.txt").write_text("no images here")
    with pytest.raises(InvalidInputError, match="no IDC patch could be imported"):
        import_dataset(empty, "x", settings=settings)
    assert list_datasets() == []
    assert not any((Path(settings.resolved_dataset_root) / "x").iterdir())


def test_zip_import_matches_folder_import(tree: Path, tmp_path: Path, settings: Settings) -> None:
    folder = import_dataset(tree, "from-folder", settings=settings, split=None)
    archive = zip_tree(tree, tmp_path / "archive.zip")
    from_zip = import_dataset(archive, "from-zip", settings=settings, split=None)
    assert from_zip.imported == folder.imported
    assert from_zip.fingerprint == folder.fingerprint


def test_zip_with_the_tree_twice_counts_duplicates(tree: Path, tmp_path: Path) -> None:
    # The Kaggle archive holds the tree at its root and again under IDC_regular_ps50_idx5/.
    archive = zip_tree(tree, tmp_path / "kaggle.zip")
    with zipfile.ZipFile(archive, "a") as bundle:
        for file in sorted(tree.rglob("*.png")):
            bundle.write(file, file.relative_to(tree).as_posix())
        bundle.writestr("__MACOSX/._junk", b"")
    report = import_dataset(archive, "kaggle", split=None)
    assert report.imported == 160 and report.duplicates == 160
    assert report.ignored == 1 and report.rejected == []


def test_same_position_with_other_content_is_rejected(tree: Path) -> None:
    patient = sorted(p.name for p in tree.iterdir())[0]
    first = sorted((tree / patient / "0").glob("*.png"))[0]
    clash = tree / "copy" / patient / "0" / first.name
    clash.parent.mkdir(parents=True)
    clash.write_bytes(
        (tree / patient / "0" / sorted((tree / patient / "0").glob("*.png"))[1].name).read_bytes()
    )
    report = import_dataset(tree, "clash", split=None)
    assert report.imported == 160
    assert report.rejected == [
        [
            f"copy/{patient}/0/{first.name}",
            f"same patient and position as {patient}/0/{first.name}, other content",
        ]
    ]


def test_pool_and_in_process_imports_agree(tree: Path, settings: Settings) -> None:
    serial = import_dataset(tree, "serial", settings=settings, split=None, workers=0)
    pooled = import_dataset(tree, "pooled", settings=settings, split=None, workers=2)
    assert serial.fingerprint == pooled.fingerprint


def test_report_is_stored_beside_the_data(imported: ImportReport, settings: Settings) -> None:
    location = describe_dataset("syn")["location"]
    stored = json.loads(
        (Path(settings.resolved_dataset_root) / location / "import-report.json").read_text()
    )
    assert stored["imported"] == 160 and stored["splits"].keys() == {"train", "validation", "test"}
