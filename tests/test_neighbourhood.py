"""bcd.neighbourhood: window means on slide grids, context features, model.json's slide_context."""

from __future__ import annotations

import numpy as np
import pytest

from bcd.errors import InvalidInputError
from bcd.neighbourhood import (
    SlideContext,
    context_map,
    grid_features,
    grid_mean,
    logits,
    parse_slide_context,
    patch_features,
    sigmoid,
)


def _brute_grid_mean(values: np.ndarray, radius: int) -> np.ndarray:
    rows, cols = values.shape
    out = np.full(values.shape, np.nan)
    for r in range(rows):
        for c in range(cols):
            if np.isfinite(values[r, c]):
                window = values[
                    max(0, r - radius) : r + radius + 1, max(0, c - radius) : c + radius + 1
                ]
                out[r, c] = np.nanmean(window)
    return out


@pytest.mark.parametrize("radius", [0, 1, 2, 4])
def test_grid_mean_averages_the_tissue_cells_of_each_window(radius: int) -> None:
    rng = np.random.default_rng(radius)
    values = rng.normal(size=(9, 13))
    values[rng.random(values.shape) < 0.3] = np.nan  # background tiles
    np.testing.assert_allclose(grid_mean(values, radius), _brute_grid_mean(values, radius))


def test_grid_mean_of_an_empty_or_single_tile_map() -> None:
    empty = np.full((3, 4), np.nan)
    assert np.isnan(grid_mean(empty, 2)).all()
    single = empty.copy()
    single[1, 2] = 0.7
    np.testing.assert_array_equal(np.isnan(grid_mean(single, 3)), np.isnan(single))
    assert grid_mean(single, 3)[1, 2] == pytest.approx(0.7)


@pytest.mark.parametrize("radius", [-1, 6, 1.5, True, "2"])
def test_bad_radius_is_refused(radius: object) -> None:
    with pytest.raises(InvalidInputError, match="radius"):
        grid_mean(np.zeros((2, 2)), radius)  # type: ignore[arg-type]


def test_logits_and_sigmoid_are_inverse_and_survive_the_extremes() -> None:
    p = np.array([1e-9, 0.2, 0.5, 0.9, 1.0, np.nan])
    back = sigmoid(logits(p))
    np.testing.assert_allclose(back[1:4], p[1:4])
    assert 0 < back[0] < 1e-5 and 1 - 1e-5 < back[4] < 1  # clipped, finite
    assert np.isnan(back[5])
    assert np.all(np.isfinite(sigmoid(np.array([-1e4, 1e4]))))


def test_patch_features_match_the_slide_grid_of_each_patient() -> None:
    rng = np.random.default_rng(0)
    groups, xs, ys, maps = [], [], [], {}
    for group in ("a", "b"):
        grid = np.full((6, 7), np.nan)
        cells = np.argwhere(rng.random(grid.shape) < 0.6)
        grid[cells[:, 0], cells[:, 1]] = rng.random(len(cells))
        maps[group] = grid
        for row, col in cells:
            groups.append(group)
            # Dataset coordinates: multiples of 50 plus the dataset's offset of 1.
            xs.append(int(col) * 50 + 1 + 500)
            ys.append(int(row) * 50 + 1)
    order = rng.permutation(len(groups))
    groups_a, xs_a, ys_a = np.array(groups)[order], np.array(xs)[order], np.array(ys)[order]
    probabilities = np.array(
        [
            maps[g][(y - 1) // 50, (x - 501) // 50]
            for g, x, y in zip(groups_a, xs_a, ys_a, strict=True)
        ]
    )
    features = patch_features(probabilities, groups_a, xs_a, ys_a, radius=2)
    assert features.shape == (len(groups_a), 3)
    for i, (group, x, y) in enumerate(zip(groups_a, xs_a, ys_a, strict=True)):
        expected = grid_features(maps[group], 2)[(y - 1) // 50, (x - 501) // 50]
        np.testing.assert_allclose(features[i], expected)


def test_patch_features_count_patches_sharing_a_cell_and_keep_groups_apart() -> None:
    p = np.array([0.5, 0.9, 0.9, 0.1])
    features = patch_features(
        p, np.array(["a", "a", "a", "b"]), np.array([0, 0, 50, 0]), np.array([0, 0, 0, 0]), 1
    )
    expected_a = logits(p[:3]).mean()
    np.testing.assert_allclose(features[:3, 1], expected_a)
    np.testing.assert_allclose(features[3], logits(p[3:]).repeat(2))  # alone in its group
    with pytest.raises(InvalidInputError, match="equally long"):
        patch_features(p, np.array(["a"]), np.zeros(4), np.zeros(4), 1)


def test_context_map_applies_the_weights_to_the_features() -> None:
    rng = np.random.default_rng(1)
    probabilities = rng.random((5, 6)).astype(np.float32)
    probabilities[0, :3] = np.nan
    context = SlideContext(radius=2, weights=(0.2, 0.3, 0.6), bias=-0.4, decision_threshold=0.3)
    combined = context_map(probabilities, context)
    own = logits(probabilities)
    expected = sigmoid(0.2 * own + 0.3 * grid_mean(own, 1) + 0.6 * grid_mean(own, 2) - 0.4)
    assert combined.dtype == np.float32
    np.testing.assert_allclose(combined, expected, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(combined), np.isnan(probabilities))
    # One weight on the tile itself and no bias gives the tile's own score back.
    alone = context_map(probabilities, SlideContext(1, (1.0, 0.0)))
    np.testing.assert_allclose(alone, probabilities, atol=1e-6)


def test_slide_context_round_trips_through_model_json() -> None:
    context = SlideContext(3, (0.1, 0.2, 0.3, 0.4), 0.5, 0.25)
    assert parse_slide_context(context.to_json()) == context
    assert parse_slide_context(None) is None
    extra = {**context.to_json(), "fitted": {"method": "anything"}}
    assert parse_slide_context(extra) == context


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"radius": 0}, "at least 1"),
        ({"radius": 9}, "between 0 and 5"),
        ({"weights": [1.0, 2.0]}, "must list 4 numbers"),
        ({"weights": [1.0, 2.0, "x", 3.0]}, "weights must be a number"),
        ({"bias": float("nan")}, "bias must be a number"),
        ({"bias": 1e9}, "out of range"),
        ({"decision_threshold": 1.0}, r"in \(0, 1\)"),
        ({"decision_threshold": None}, "decision_threshold must be a number"),
    ],
)
def test_bad_slide_context_names_the_field(change: dict, message: str) -> None:
    document = {**SlideContext(3, (0.1, 0.2, 0.3, 0.4), 0.5, 0.25).to_json(), **change}
    with pytest.raises(InvalidInputError, match=message):
        parse_slide_context(document)
    with pytest.raises(InvalidInputError, match="must be an object"):
        parse_slide_context([1, 2])
