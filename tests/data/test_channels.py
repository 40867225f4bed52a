"""Channels: dataset URIs, packed split folders (local and fsspec URLs), file mode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest

from bcd.config import Settings
from bcd.data import ImportReport, PackedSplit, export_dataset, open_channel, open_split
from bcd.errors import InvalidInputError, NotFoundError


def test_dataset_uri_opens_the_split(imported: ImportReport) -> None:
    channel = open_channel("dataset://syn/train")
    assert channel.split == "train" and channel.dataset == "syn"
    assert isinstance(channel.images, np.memmap)
    assert channel.images.shape == (len(channel), 50, 50, 3) and channel.images.dtype == np.uint8
    assert channel.labels.dtype == np.int64 and channel.xs.shape == channel.ys.shape == (
        len(channel),
    )
    assert channel.fingerprint == imported.splits["train"]["fingerprint"]


def test_packed_folder_is_self_contained(imported: ImportReport, tmp_path: Path) -> None:
    # A training job gets a copy of the folder as SM_CHANNEL_TRAIN.
    source = open_split("syn", "train")
    assert source.path is not None
    copy = Path(shutil.copytree(source.path, tmp_path / "channel"))
    channel = open_channel(str(copy))
    np.testing.assert_array_equal(channel.images, source.images)
    np.testing.assert_array_equal(channel.patient_ids, source.patient_ids)
    assert channel.fingerprint == source.fingerprint
    assert channel.channel_stats() == source.channel_stats()
    assert open_channel(f"file://{copy}").fingerprint == source.fingerprint


def test_channel_stats_match_the_pixels(imported: ImportReport) -> None:
    channel = open_split("syn", "validation")
    mean, std = channel.channel_stats()
    pixels = np.asarray(channel.images, np.float64).reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(std, pixels.std(axis=0), atol=1e-5)


def test_fsspec_url_is_cached_locally(imported: ImportReport, settings: Settings) -> None:
    source = open_split("syn", "test")
    assert source.path is not None
    fs = fsspec.filesystem("memory")
    for file in source.path.iterdir():
        fs.pipe_file(f"/bcd-test/channel/{file.name}", file.read_bytes())
    try:
        channel = open_channel("memory://bcd-test/channel", settings)
        assert channel.path is not None and settings.home in channel.path.parents
        np.testing.assert_array_equal(channel.images, source.images)
        assert channel.fingerprint == source.fingerprint
    finally:
        fs.rm("/bcd-test", recursive=True)


def test_damaged_packed_split_is_refused(imported: ImportReport, tmp_path: Path) -> None:
    source = open_split("syn", "train")
    assert source.path is not None
    copy = Path(shutil.copytree(source.path, tmp_path / "broken"))
    with open(copy / "images.u8", "r+b") as handle:
        handle.truncate(7500)
    with pytest.raises(InvalidInputError, match="damaged"):
        open_channel(copy)


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("dataset://syn", InvalidInputError, "malformed"),
        ("dataset://syn/train/extra", InvalidInputError, "malformed"),
        ("dataset://nope/train", NotFoundError, "does not exist"),
        ("dataset://syn/holdout", NotFoundError, "no split 'holdout'"),
        ("/definitely/not/here", NotFoundError, "does not exist"),
    ],
)
def test_bad_channels_are_refused(
    imported: ImportReport, uri: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        open_channel(uri)


def test_folder_that_is_no_channel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(InvalidInputError, match="neither a packed split"):
        open_channel(tmp_path)


def test_file_mode_lst_matches_the_packed_split(imported: ImportReport, tmp_path: Path) -> None:
    export_dataset("syn", tmp_path / "loose", format="lst")
    packed = open_split("syn", "validation")
    loose = open_channel(tmp_path / "loose" / "validation.lst")
    assert loose.path is None and loose.split == "validation"
    np.testing.assert_array_equal(loose.images, np.asarray(packed.images))
    np.testing.assert_array_equal(loose.labels, packed.labels)
    np.testing.assert_array_equal(loose.patient_ids, packed.patient_ids)
    np.testing.assert_array_equal(loose.xs, packed.xs)
    assert loose.fingerprint == packed.fingerprint
    with pytest.raises(InvalidInputError, match="list files"):
        open_channel(tmp_path / "loose")


def test_file_mode_csv_with_any_file_names(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id"]
    for index in range(4):
        Image.fromarray(rng.integers(0, 255, (50, 50, 3), dtype=np.uint8)).save(
            tmp_path / f"img{index}.png"
        )
        rows.append(f"img{index}.png,{index % 2},p{index // 2}")
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    channel = open_channel(tmp_path)
    assert isinstance(channel, PackedSplit) and len(channel) == 4
    assert channel.labels.tolist() == [0, 1, 0, 1]
    assert channel.patient_ids.tolist() == ["p0", "p0", "p1", "p1"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("train.lst", "0\t1\n", "index<TAB>label<TAB>path"),
        ("train.lst", "0\t7\tx.png\n", "not 0 or 1"),
        ("train.lst", "0\t1\tmissing.png\n", "cannot be read"),
        ("train.csv", "file,label\nx.png,1\n", "columns path,label"),
        ("train.csv", "path,label\n", "lists no images"),
    ],
    ids=["short-line", "bad-label", "missing-image", "bad-header", "empty"],
)
def test_bad_file_mode_lists_are_refused(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(InvalidInputError, match=message):
        open_channel(tmp_path / name)


def test_split_json_is_small_and_complete(imported: ImportReport) -> None:
    source = open_split("syn", "train")
    assert source.path is not None
    meta = json.loads((source.path / "split.json").read_text())
    assert {"count", "fingerprint", "channel_mean", "channel_std", "shards", "class_counts"} <= set(
        meta
    )
    assert meta["shards"][0][0] == 0 and meta["shards"][-1][1] == meta["count"]


def test_remote_dataset_store_round_trip(tree: Path, tmp_path: Path) -> None:
    # Any fsspec store works as BCD_DATASET_ROOT; memory:// stands in for s3:// here.
    from bcd.data import import_dataset

    settings = Settings(home=tmp_path / "home", dataset_root="memory://bcd-remote/datasets")
    try:
        report = import_dataset(tree, "remote", settings=settings)
        train = open_split("remote", "train", settings)
        assert train.path is not None and settings.home in train.path.parents
        assert train.fingerprint == report.splits["train"]["fingerprint"]
        assert len(open_split("remote", "all", settings)) == 160
    finally:
        fsspec.filesystem("memory").rm("/bcd-remote", recursive=True)
