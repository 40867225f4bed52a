"""Deep Zoom geometry (levels, tiles, overlap) and the tile cache behind the viewer routes."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bcd.errors import InvalidInputError
from bcd.slides._deepzoom import DeepZoomGeometry, TileCache


@pytest.mark.parametrize(
    ("width", "height", "max_level"),
    [(3200, 2400, 12), (4096, 10, 12), (4097, 10, 13), (1, 1, 0), (2, 1, 1)],
    ids=["3200x2400", "power-of-two", "one-past", "one-pixel", "two-pixels"],
)
def test_levels_halve_down_to_one_pixel(width: int, height: int, max_level: int) -> None:
    geometry = DeepZoomGeometry(width, height)
    assert geometry.max_level == max_level
    assert geometry.level_size(max_level) == (width, height)
    assert geometry.level_size(0) == (1, 1)
    for level in range(1, max_level + 1):
        wide, high = geometry.level_size(level)
        assert geometry.level_size(level - 1) == (-(-wide // 2), -(-high // 2))


def test_tiles_overlap_their_neighbours_and_stop_at_the_edge() -> None:
    geometry = DeepZoomGeometry(3200, 2400)
    assert geometry.tile_counts(12) == (13, 10)
    assert geometry.tile_box(12, 0, 0) == (0, 0, 255, 255)
    assert geometry.tile_box(12, 1, 1) == (253, 253, 509, 509)
    assert geometry.tile_box(12, 12, 9) == (3047, 2285, 3200, 2400)
    assert geometry.level_size(11) == (1600, 1200) and geometry.tile_counts(11) == (7, 5)
    assert geometry.tile_box(8, 0, 0) == (0, 0, 200, 150)


@pytest.mark.parametrize(
    ("level", "col", "row", "message"),
    [
        (13, 0, 0, "levels 0..12"),
        (-1, 0, 0, "levels 0..12"),
        (12, 13, 0, "13 x 10 tiles"),
        (12, 0, 10, "13 x 10 tiles"),
        (12, -1, 0, "13 x 10 tiles"),
    ],
    ids=["level-too-high", "negative-level", "col-past-edge", "row-past-edge", "negative-col"],
)
def test_tiles_that_do_not_exist_are_refused(level: int, col: int, row: int, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        DeepZoomGeometry(3200, 2400).tile_box(level, col, row)


def test_descriptor_follows_the_deep_zoom_schema() -> None:
    root = ET.fromstring(DeepZoomGeometry(640, 480).xml("png"))
    assert root.tag == "{http://schemas.microsoft.com/deepzoom/2008}Image"
    assert root.attrib == {"Format": "png", "Overlap": "1", "TileSize": "254"}
    size = root.find("{http://schemas.microsoft.com/deepzoom/2008}Size")
    assert size is not None and size.attrib == {"Width": "640", "Height": "480"}


def test_cache_renders_once_and_evicts_the_least_recently_used() -> None:
    cache = TileCache(max_bytes=250)
    calls: list[str] = []

    def render(name: str) -> bytes:
        calls.append(name)
        return name.encode() * 100  # 100 bytes

    assert cache.get_or_render(("a", 1), lambda: render("a")) == b"a" * 100
    assert cache.get_or_render(("a", 1), lambda: render("a")) == b"a" * 100
    assert calls == ["a"]
    cache.get_or_render(("b", 1), lambda: render("b"))
    cache.get_or_render(("a", 1), lambda: render("a"))  # "a" is now the most recent
    cache.get_or_render(("c", 1), lambda: render("c"))  # over 250 bytes: "b" goes
    assert len(cache) == 2
    cache.get_or_render(("a", 1), lambda: render("a"))
    cache.get_or_render(("b", 1), lambda: render("b"))
    assert calls == ["a", "b", "c", "b"]


def test_forgetting_an_analysis_drops_only_its_tiles() -> None:
    cache = TileCache()
    for key in (("one", 0), ("one", 1), ("two", 0)):
        cache.get_or_render(key, lambda: b"tile")
    cache.forget("one")
    assert len(cache) == 1
    rendered: list[bool] = []
    cache.get_or_render(("two", 0), lambda: rendered.append(True) or b"tile")
    assert not rendered


def test_a_view_closed_while_in_use_still_answers(tmp_path: Path) -> None:
    from bcd.slides import AnalysisOptions, analyze_file
    from bcd.slides._deepzoom import DeepZoomViews
    from tests.slides.conftest import darkness_predict, synthetic_slide
    from tests.slides.test_routes import write_pyramidal_tiff

    folder = tmp_path / "analysis"
    folder.mkdir()
    slide = write_pyramidal_tiff(folder / "slide.tif", synthetic_slide(), upscale=2)
    analyze_file(slide, darkness_predict, folder / "outputs")
    views = DeepZoomViews(open_views=1)
    view = views.view("a" * 32, folder, AnalysisOptions())
    before = view.slide_tile(11, 1, 1)
    views.view("b" * 32, folder, AnalysisOptions())  # evicts and closes the first view
    assert view.slide_tile(11, 1, 1) == before
