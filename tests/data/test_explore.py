"""Stats, sample grids and slide mosaics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.data import ImportReport, dataset_stats, open_split, render_grid, render_mosaic
from bcd.errors import InvalidInputError, NotFoundError


def test_stats_count_splits_classes_patients_and_sizes(imported: ImportReport) -> None:
    stats = dataset_stats("syn")
    assert stats["patches"] == 160 and stats["patients"] == 8
    assert stats["class_counts"] == imported.class_counts
    assert set(stats["splits"]) == {"train", "validation", "test"}
    assert sum(s["patches"] for s in stats["splits"].values()) == 160
    assert sum(row["patches"] for row in stats["per_patient"]) == 160
    assert {row["split"] for row in stats["per_patient"]} == {"train", "validation", "test"}
    assert stats["sizes"]["50x50"] == 157 and stats["padded"] == 3
    train = open_split("syn", "train")
    assert stats["normalization_split"] == "train"
    assert stats["channel_mean"] == train.channel_stats()[0]


def test_grid_shows_both_classes(imported: ImportReport, tmp_path: Path) -> None:
    path = render_grid("syn", tmp_path / "grid.png", per_class=8, columns=4, zoom=1)
    image = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert image.shape[1] == 4 * 54 + 8
    half = image.shape[0] // 2
    # Synthetic IDC patches are darker than no-IDC patches.
    assert image[half:].mean() < image[:half].mean()


def test_grid_needs_a_png_path(imported: ImportReport, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"\.png"):
        render_grid("syn", tmp_path / "grid.jpg")


def test_mosaic_places_patches_at_their_coordinates(imported: ImportReport, tmp_path: Path) -> None:
    everything = open_split("syn", "all")
    patient = everything.patient_ids[0]
    members = np.flatnonzero(everything.patient_ids == patient)
    path = render_mosaic("syn", patient, tmp_path / "slide.png", overlay=False)
    slide = np.asarray(Image.open(path).convert("RGB"))
    left, top = everything.xs[members].min(), everything.ys[members].min()
    assert slide.shape[1] == everything.xs[members].max() - left + 50
    full = [i for i in members if not everything.manifest()["padded"][int(i)].as_py()]
    for index in full[:5]:
        x, y = everything.xs[index] - left, everything.ys[index] - top
        np.testing.assert_array_equal(slide[y : y + 50, x : x + 50], everything.images[index])


def test_mosaic_overlay_tints_idc_red(imported: ImportReport, tmp_path: Path) -> None:
    everything = open_split("syn", "all")
    patient = everything.patient_ids[np.flatnonzero(everything.labels == 1)[0]]
    members = np.flatnonzero(everything.patient_ids == patient)
    plain = np.asarray(Image.open(render_mosaic("syn", patient, tmp_path / "a.png", overlay=False)))
    tinted = np.asarray(Image.open(render_mosaic("syn", patient, tmp_path / "b.png")))
    left, top = everything.xs[members].min(), everything.ys[members].min()
    for index in members[:10]:
        x, y = everything.xs[index] - left + 10, everything.ys[index] - top + 10
        before, after = (
            plain[y : y + 30, x : x + 30].astype(int),
            tinted[y : y + 30, x : x + 30].astype(int),
        )
        redder = (after[..., 0] - after[..., 1]).mean() > (
            before[..., 0] - before[..., 1]
        ).mean() + 5
        assert redder == (everything.labels[index] == 1)


def test_mosaic_of_unknown_patient_is_not_found(imported: ImportReport, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="patient '00000' is not in dataset"):
        render_mosaic("syn", "00000", tmp_path / "x.png")


def test_mosaic_is_downscaled_to_max_side(imported: ImportReport, tmp_path: Path) -> None:
    patient = open_split("syn", "all").patient_ids[0]
    image = Image.open(render_mosaic("syn", patient, tmp_path / "small.png", max_side=60))
    assert max(image.width, image.height - 28) <= 60
