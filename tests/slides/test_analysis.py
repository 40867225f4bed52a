"""Tiling, tissue masks and whole-slide analysis against slides with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from bcd.errors import InvalidInputError
from bcd.slides import (
    AnalysisOptions,
    ArraySlideReader,
    analyze_slide,
    build_report,
    otsu_threshold,
    plan_grid,
    saturation,
    tissue_mask,
)
from tests.slides.conftest import GLASS, TISSUE, darkness_predict, synthetic_slide


def test_otsu_splits_two_populations() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(10, 3, 5000), rng.normal(120, 10, 5000)])
    assert 25 < otsu_threshold(np.clip(values, 0, 255)) < 100
    assert otsu_threshold(np.full(100, 42.0)) == pytest.approx(42.5)


def test_tissue_mask_separates_stain_from_glass(slide_image: np.ndarray) -> None:
    assert saturation(np.array([[GLASS]], np.uint8))[0, 0] < 5
    assert saturation(np.array([[TISSUE]], np.uint8))[0, 0] > 60
    mask = tissue_mask(slide_image)
    assert mask[150:450, 150:650].mean() > 0.99
    assert mask[:90].mean() < 0.01


def test_scores_only_tissue_and_finds_the_tumour(slide_image: np.ndarray) -> None:
    seen: list[int] = []

    def predict(tiles: np.ndarray) -> np.ndarray:
        assert tiles.shape[1:] == (50, 50, 3) and tiles.dtype == np.uint8
        seen.append(len(tiles))
        return darkness_predict(tiles)

    analysis = analyze_slide(
        ArraySlideReader(slide_image, mpp=4.0), predict, AnalysisOptions(batch_size=7)
    )
    assert analysis.probabilities.shape == (12, 16)
    expected_tissue = np.zeros((12, 16), bool)
    expected_tissue[2:10, 2:14] = True
    np.testing.assert_array_equal(analysis.tissue, expected_tissue)
    assert sum(seen) == 96 and max(seen) <= 7
    positive = analysis.probabilities >= 0.5
    expected_positive = np.zeros((12, 16), bool)
    expected_positive[4:8, 5:10] = True
    np.testing.assert_array_equal(positive, expected_positive)
    assert np.isnan(analysis.probabilities[0, 0])

    report = build_report(analysis)
    assert report["tiles"] == {"grid": 192, "tissue": 96, "idc_positive": 20}
    assert report["idc_positive_fraction"] == pytest.approx(20 / 96, abs=1e-4)
    region = report["largest_region"]
    assert region["tiles"] == 20
    assert region["bbox"] == {"x": 250, "y": 200, "width": 250, "height": 200}
    assert report["idc_area_mm2"] == pytest.approx(20 * 0.2 * 0.2)
    top = report["top_tiles"]
    assert len(top) == 12 and all(4 <= t["row"] < 8 and 5 <= t["col"] < 10 for t in top)
    assert top[0]["x"] == top[0]["col"] * 50
    assert report["notes"] == []


def test_ground_truth_metrics(slide_image: np.ndarray, truth_map: np.ndarray) -> None:
    analysis = analyze_slide(ArraySlideReader(slide_image, mpp=4.0), darkness_predict)
    truth = build_report(analysis, truth=truth_map)["ground_truth"]
    assert truth["auc"] == 1.0 and truth["balanced_accuracy"] == 1.0 and truth["f1"] == 1.0
    assert truth["annotated_tiles"] == 96 and truth["positives"] == 20
    assert truth["coverage"] == 1.0
    flipped = truth_map.copy()
    flipped[flipped >= 0] = 1 - flipped[flipped >= 0]
    assert build_report(analysis, truth=flipped)["ground_truth"]["auc"] == 0.0
    with pytest.raises(InvalidInputError, match="-1"):
        build_report(analysis, truth=np.full((3, 3), 7))


def test_overlapping_stride_doubles_the_grid(
    slide_image: np.ndarray, truth_map: np.ndarray
) -> None:
    options = AnalysisOptions(stride=25)
    analysis = analyze_slide(ArraySlideReader(slide_image, mpp=4.0), darkness_predict, options)
    assert analysis.probabilities.shape == (23, 31)
    report = build_report(analysis, truth=truth_map)
    assert report["ground_truth"]["auc"] > 0.95
    assert report["analysis"]["stride"] == 25


def test_missing_mpp_is_assumed_and_said() -> None:
    analysis = analyze_slide(ArraySlideReader(synthetic_slide()), darkness_predict)
    assert analysis.slide["mpp_source"] == "assumed"
    assert "assumed 4 µm/px" in analysis.notes[0]
    assert analysis.grid.level == 0 and analysis.grid.scale == 1.0


def test_finer_scan_uses_the_matching_pyramid_level() -> None:
    base = synthetic_slide()  # at the model's 4 µm/px
    fine = np.repeat(np.repeat(base, 4, axis=0), 4, axis=1)  # same slide at 1 µm/px
    reader = ArraySlideReader([fine, base], mpp=1.0)
    grid = plan_grid(reader)
    assert (grid.level, grid.scale, grid.rows, grid.cols) == (1, 1.0, 12, 16)
    assert grid.footprint == 200
    flat = ArraySlideReader(fine, mpp=1.0)  # no pyramid: read level 0 and downsample 4x
    analysis = analyze_slide(flat, darkness_predict)
    assert analysis.grid.scale == pytest.approx(0.25)
    assert (analysis.grid.rows, analysis.grid.cols) == (12, 16)
    assert int((analysis.probabilities >= 0.5).sum()) == 20


def test_coarser_scan_is_upsampled_with_a_warning() -> None:
    coarse = synthetic_slide()[::2, ::2]
    analysis = analyze_slide(ArraySlideReader(coarse, mpp=8.0), darkness_predict)
    assert analysis.grid.scale == pytest.approx(2.0)
    assert (analysis.grid.rows, analysis.grid.cols) == (12, 16)
    assert "upsampled" in analysis.notes[0]


def test_all_tiles_mode_scores_background_too(slide_image: np.ndarray) -> None:
    options = AnalysisOptions(detect_tissue=False)
    analysis = analyze_slide(ArraySlideReader(slide_image, mpp=4.0), darkness_predict, options)
    assert analysis.tissue.all() and not np.isnan(analysis.probabilities).any()


def test_progress_reports_and_can_cancel(slide_image: np.ndarray) -> None:
    updates: list[tuple[int, int]] = []
    analyze_slide(
        ArraySlideReader(slide_image, mpp=4.0),
        darkness_predict,
        AnalysisOptions(batch_size=10),
        progress=lambda done, total: updates.append((done, total)),
    )
    assert updates[0] == (0, 96) and updates[-1] == (96, 96)
    assert [done for done, _ in updates] == sorted(done for done, _ in updates)

    class Stop(Exception):
        pass

    def stop_after_first(done: int, total: int) -> None:
        if done:
            raise Stop

    with pytest.raises(Stop):
        analyze_slide(
            ArraySlideReader(slide_image, mpp=4.0),
            darkness_predict,
            AnalysisOptions(batch_size=10),
            progress=stop_after_first,
        )


@pytest.mark.parametrize(
    ("output", "message"),
    [
        (lambda n: np.zeros((n, 3)), "expected"),
        (lambda n: np.full((n, 2), 5.0), "outside"),
        (lambda n: np.zeros((n + 1, 2)), "expected"),
    ],
    ids=["three-classes", "logits", "wrong-count"],
)
def test_bad_classifier_output_is_refused(slide_image: np.ndarray, output, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError, match=message):
        analyze_slide(ArraySlideReader(slide_image), lambda tiles: output(len(tiles)))


@pytest.mark.parametrize(
    "options",
    [
        AnalysisOptions(threshold=1.5),
        AnalysisOptions(stride=0),
        AnalysisOptions(batch_size=0),
        AnalysisOptions(mpp=-1.0),
        AnalysisOptions(model_mpp=0.0),
    ],
    ids=["threshold", "stride", "batch", "mpp", "model-mpp"],
)
def test_bad_options_are_refused(slide_image: np.ndarray, options: AnalysisOptions) -> None:
    with pytest.raises(InvalidInputError):
        analyze_slide(ArraySlideReader(slide_image), darkness_predict, options)


def test_reader_errors_reach_the_caller(slide_image: np.ndarray) -> None:
    class Broken(ArraySlideReader):
        def _read(self, level, x, y, width, height):  # type: ignore[no-untyped-def]
            if y > 100:
                raise InvalidInputError("segment 7 could not be decoded")
            return super()._read(level, x, y, width, height)

    with pytest.raises(InvalidInputError, match="segment 7"):
        analyze_slide(Broken(slide_image, mpp=4.0), darkness_predict, AnalysisOptions(batch_size=4))
