"""Files written for an analysis: heatmap, overlay, maps, JSON and the one-page report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bcd.neighbourhood import SlideContext, context_map
from bcd.slides import (
    AnalysisOptions,
    ArraySlideReader,
    analyze_file,
    analyze_slide,
    colorize,
    heatmap_image,
    load_truth,
)
from tests.slides.conftest import darkness_predict


@pytest.fixture
def slide_file(tmp_path: Path, slide_image: np.ndarray) -> Path:
    path = tmp_path / "slide.png"
    Image.fromarray(slide_image).save(path, dpi=(6350, 6350))
    return path


def test_colour_scale_runs_blue_to_red() -> None:
    low, middle, high = colorize(np.array([0.0, 0.5, 1.0]))
    assert low[2] > low[0] and high[0] > high[2]
    assert tuple(middle) == (255, 255, 191)


def test_analyze_file_writes_every_output(
    tmp_path: Path, slide_file: Path, truth_map: np.ndarray
) -> None:
    out = tmp_path / "out"
    report = analyze_file(
        slide_file, darkness_predict, out, truth=truth_map, model={"endpoint": "test"}
    )
    names = {path.name for path in out.iterdir()}
    assert names == {
        "report.json", "report.pdf", "report.png", "heatmap.png", "overlay.png",
        "thumbnail.jpg", "probabilities.npy", "comparison.png", "truth.npy",
        "regions.geojson", "tiles.csv",
    }  # fmt: skip
    assert not any(name.startswith(".") for name in names)  # no temporary leftovers
    written = json.loads((out / "report.json").read_text())
    assert written == json.loads(json.dumps(report))
    assert written["source"]["filename"] == "slide.png" and len(written["source"]["sha256"]) == 64
    assert written["slide"]["mpp_source"] == "file"
    assert written["ground_truth"]["auc"] == 1.0
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF")
    probabilities = np.load(out / "probabilities.npy", allow_pickle=False)
    assert probabilities.shape == (12, 16)
    overlay = Image.open(out / "overlay.png")
    thumbnail = Image.open(out / "thumbnail.jpg")
    assert overlay.mode == "RGBA" and overlay.size == thumbnail.size
    alpha = np.asarray(overlay)[..., 3]
    assert alpha[0, 0] == 0 and alpha[250, 350] == 255  # glass clear, tissue coloured
    red, _, blue = np.asarray(overlay)[300, 350, :3].astype(int)  # inside the tumour
    assert red > blue
    page = Image.open(out / "report.png")
    assert page.size == (1240, 1754)


def test_the_models_slide_context_combines_neighbouring_tiles(
    tmp_path: Path, slide_file: Path, truth_map: np.ndarray
) -> None:
    context = SlideContext(radius=1, weights=(0.4, 0.8), bias=-0.2, decision_threshold=0.35)
    model = {"model": "m", "decision_threshold": 0.6, "slide_context": context.to_json()}
    alone = analyze_file(
        slide_file, darkness_predict, tmp_path / "alone", options=AnalysisOptions(context=False),
        model=model,
    )  # fmt: skip
    combined = analyze_file(
        slide_file, darkness_predict, tmp_path / "with", truth=truth_map, model=model
    )
    raw = np.load(tmp_path / "alone" / "probabilities.npy", allow_pickle=False)
    written = np.load(tmp_path / "with" / "probabilities.npy", allow_pickle=False)
    np.testing.assert_allclose(written, context_map(raw, context), rtol=1e-6)
    assert not np.allclose(np.nan_to_num(written), np.nan_to_num(raw), atol=1e-3)
    # The context's own threshold applies to its scores; alone, the model's.
    assert combined["analysis"]["threshold"] == 0.35
    assert combined["analysis"]["context_radius"] == 1
    assert alone["analysis"]["threshold"] == 0.6
    assert alone["analysis"]["context_radius"] == 0
    assert combined["ground_truth"]["auc"] > 0.9
    # The gallery ranks tiles by their own score and shows both values.
    own = [tile["tile_probability"] for tile in combined["top_tiles"]]
    assert own == sorted(own, reverse=True)
    assert [t["tile_probability"] for t in combined["top_tiles"]] == [
        t["probability"] for t in alone["top_tiles"]
    ]
    for tile in combined["top_tiles"]:
        assert tile["probability"] == pytest.approx(written[tile["row"], tile["col"]], abs=1e-4)
    # A threshold the user chose wins over both.
    chosen = analyze_file(
        slide_file, darkness_predict, tmp_path / "chosen",
        options=AnalysisOptions(threshold=0.5), model=model,
    )  # fmt: skip
    assert chosen["analysis"]["threshold"] == 0.5 and chosen["analysis"]["context_radius"] == 1


def test_slide_context_is_skipped_with_a_note_when_tiles_overlap(
    tmp_path: Path, slide_file: Path
) -> None:
    context = SlideContext(radius=1, weights=(0.4, 0.8), bias=-0.2, decision_threshold=0.35)
    model = {"decision_threshold": 0.6, "slide_context": context.to_json()}
    report = analyze_file(
        slide_file, darkness_predict, tmp_path / "out", options=AnalysisOptions(stride=25),
        model=model,
    )  # fmt: skip
    assert report["analysis"]["context_radius"] == 0
    assert report["analysis"]["threshold"] == 0.6
    assert any("stride 25" in note for note in report["notes"])


def test_heatmap_has_a_legend_beside_the_slide(slide_image: np.ndarray) -> None:
    analysis = analyze_slide(ArraySlideReader(slide_image, mpp=4.0), darkness_predict)
    heatmap = heatmap_image(analysis)
    assert heatmap.width > analysis.thumbnail.shape[1] + 100
    legend = np.asarray(heatmap)[:, analysis.thumbnail.shape[1] + 10 :]
    assert len(np.unique(legend.reshape(-1, 3), axis=0)) > 50  # a colour bar, not blank


def test_without_truth_no_comparison(tmp_path: Path, slide_file: Path) -> None:
    analyze_file(slide_file, darkness_predict, tmp_path / "out", options=AnalysisOptions(top_k=3))
    assert not (tmp_path / "out" / "comparison.png").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ground_truth"] is None and len(report["top_tiles"]) == 3


def test_truth_loads_from_npy_and_png(tmp_path: Path, truth_map: np.ndarray) -> None:
    np.save(tmp_path / "truth.npy", truth_map)
    grey = np.choose(truth_map + 1, [0, 128, 255]).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "truth.png")
    np.testing.assert_array_equal(load_truth(tmp_path / "truth.npy"), truth_map)
    np.testing.assert_array_equal(load_truth((tmp_path / "truth.png").read_bytes()), truth_map)
    with pytest.raises(Exception, match="ground truth"):
        load_truth(b"garbage")


@pytest.mark.parametrize(
    ("given", "model", "used"),
    [
        (None, {"decision_threshold": 0.3}, 0.3),
        (0.6, {"decision_threshold": 0.3}, 0.6),
        (None, {"endpoint": "test"}, 0.5),
    ],
    ids=["model-calibrated", "user-choice-wins", "no-model-threshold"],
)
def test_tile_threshold_defaults_to_the_models_decision_threshold(
    tmp_path: Path, slide_file: Path, given: float | None, model: dict, used: float
) -> None:
    report = analyze_file(
        slide_file,
        darkness_predict,
        tmp_path / "out",
        options=AnalysisOptions(threshold=given),
        model=model,
    )
    assert report["analysis"]["threshold"] == used
    probabilities = np.load(tmp_path / "out" / "probabilities.npy", allow_pickle=False)
    scored = probabilities[np.isfinite(probabilities)]
    assert report["tiles"]["idc_positive"] == int((scored >= used).sum())


# -- exports: QuPath GeoJSON and tile CSV --------------------------------------


def test_regions_become_qupath_annotations_with_holes_and_corner_contacts() -> None:
    from bcd.slides._regions import regions_geojson

    probabilities = np.full((6, 8), 0.1, dtype=np.float32)
    probabilities[0, :] = np.nan  # background row: never positive
    probabilities[1:5, 0:3] = 0.9  # a 4 x 3 block with a hole in the middle
    probabilities[2, 1] = 0.2
    probabilities[1, 5] = probabilities[2, 6] = 0.8  # two cells touching at a corner
    collection = regions_geojson(probabilities, 0.5, 10.0, (75, 60), mpp=0.5)
    assert collection["type"] == "FeatureCollection"
    block, pair = collection["features"]
    assert block["geometry"]["type"] == "Polygon"
    outer, hole = block["geometry"]["coordinates"]
    assert sorted(map(tuple, outer))[0] == (0.0, 10.0) and len(outer) == 5  # a plain rectangle
    assert len(hole) == 5 and hole[0] == hole[-1]  # a closed ring round the low cell
    assert set(map(tuple, hole)) == {(10.0, 20.0), (20.0, 20.0), (20.0, 30.0), (10.0, 30.0)}
    assert pair["geometry"]["type"] == "MultiPolygon"  # 8-connected, one region, two parts
    assert len(pair["geometry"]["coordinates"]) == 2
    properties = block["properties"]
    assert properties["objectType"] == "annotation"
    assert properties["classification"] == {"name": "IDC", "color": [215, 25, 28]}
    measured = properties["measurements"]
    assert measured["Tiles"] == 11
    assert measured["Mean IDC probability"] == pytest.approx(0.9)
    assert measured["Area µm^2"] == pytest.approx(11 * 100 * 0.25)  # 10 px cells at 0.5 µm/px
    assert pair["properties"]["measurements"]["Max IDC probability"] == pytest.approx(0.8)


def test_regions_are_clipped_to_the_slide_and_empty_without_positives() -> None:
    from bcd.slides._regions import regions_geojson

    probabilities = np.full((2, 2), 0.9, dtype=np.float32)
    clipped = regions_geojson(probabilities, 0.5, 10.0, (15, 20), mpp=1.0)["features"][0]
    xs = [x for x, _ in clipped["geometry"]["coordinates"][0]]
    assert max(xs) == 15.0 and clipped["properties"]["measurements"]["Area µm^2"] == 300.0
    assert regions_geojson(probabilities, 0.95, 10.0, (20, 20), mpp=1.0)["features"] == []


def test_exports_match_the_analysis(
    tmp_path: Path, slide_file: Path, truth_map: np.ndarray
) -> None:
    import csv

    out = tmp_path / "out"
    report = analyze_file(slide_file, darkness_predict, out, truth=truth_map)
    probabilities = np.load(out / "probabilities.npy", allow_pickle=False)
    rows = list(csv.DictReader((out / "tiles.csv").open()))
    assert list(rows[0]) == [
        "row", "col", "x", "y", "width", "height", "probability", "tile_probability", "idc",
        "truth",
    ]  # fmt: skip
    assert len(rows) == report["tiles"]["tissue"] == int((~np.isnan(probabilities)).sum())
    assert sum(int(row["idc"]) for row in rows) == report["tiles"]["idc_positive"]
    first = rows[0]
    row, col = int(first["row"]), int(first["col"])
    assert float(first["probability"]) == pytest.approx(probabilities[row, col], abs=1e-4)
    assert first["tile_probability"] == first["probability"]  # no slide context here
    assert (int(first["x"]), int(first["y"])) == (col * 50, row * 50)
    assert {row["truth"] for row in rows} <= {"0", "1", ""}
    tumour = next(row for row in rows if (row["row"], row["col"]) == ("5", "6"))
    assert tumour["truth"] == "1" and tumour["idc"] == "1"
    collection = json.loads((out / "regions.geojson").read_text())
    assert len(collection["features"]) == 1
    region = report["largest_region"]
    feature = collection["features"][0]
    assert feature["properties"]["measurements"]["Tiles"] == region["tiles"]
    points = np.array(feature["geometry"]["coordinates"][0])
    assert points[:, 0].min() == region["bbox"]["x"] and points[:, 1].min() == region["bbox"]["y"]
    assert points[:, 0].max() == region["bbox"]["x"] + region["bbox"]["width"]


def test_the_tiles_own_scores_are_kept_when_the_context_changes_the_map(
    tmp_path: Path, slide_file: Path
) -> None:
    import csv

    context = SlideContext(radius=1, weights=(0.5, 0.8), bias=0.0, decision_threshold=0.5)
    analyze_file(slide_file, darkness_predict, tmp_path, model={"slide_context": context.to_json()})
    own = np.load(tmp_path / "tile_probabilities.npy", allow_pickle=False)
    combined = np.load(tmp_path / "probabilities.npy", allow_pickle=False)
    assert not np.allclose(np.nan_to_num(own), np.nan_to_num(combined), atol=1e-3)
    for row in csv.DictReader((tmp_path / "tiles.csv").open()):
        r, c = int(row["row"]), int(row["col"])
        assert float(row["tile_probability"]) == pytest.approx(own[r, c], abs=1e-4)
