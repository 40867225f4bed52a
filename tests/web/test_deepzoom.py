"""End to end in a real browser: a pyramidal TIFF in the deep-zoom viewer, inspect, exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.slides.conftest import synthetic_slide
from tests.slides.test_routes import write_pyramidal_tiff
from tests.web.conftest import ARTIFACTS, screenshot

pytestmark = pytest.mark.browser

VENDORED = (
    Path(__file__).resolve().parents[2]
    / "bcd/serving/web/vendor/openseadragon/openseadragon.min.js"
)
# Fraction of a canvas's pixels whose red beats their blue: the heatmap's red over tissue.
RED_FRACTION = """(selector) => {
  const canvas = document.querySelector(selector);
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let red = 0;
  for (let i = 0; i < data.length; i += 4) if (data[i] > data[i + 2] + 40) red++;
  return red / (data.length / 4);
}"""
# The viewer's own canvas comes first; the navigator (minimap) has another.
OSD_CANVAS = "#deepzoom .openseadragon-canvas canvas"


def _slide_and_truth(folder: Path) -> tuple[Path, Path]:
    """A 3200 x 2400 JPEG-tiled pyramid (1 µm/px) and its truth on 50 level-0 px cells."""
    slide = write_pyramidal_tiff(folder / "case.tif", synthetic_slide())
    truth = np.full((48, 64), -1, dtype=np.int8)
    truth[8:40, 8:56] = 0
    truth[16:32, 20:40] = 1
    np.save(folder / "truth.npy", truth)
    return slide, folder / "truth.npy"


def _settled(page: Any) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(500)  # the viewer's zoom animation and last draw


def _delete_all(page: Any) -> None:
    page.evaluate(
        "async () => { const listed = (await (await fetch('/slides')).json()).slides;"
        " for (const item of listed) await fetch(`/slides/${item.id}`, {method: 'DELETE'}); }"
    )


def test_pyramidal_tiff_in_the_deep_zoom_viewer(page: Any, tmp_path: Path) -> None:
    if not VENDORED.exists():
        pytest.skip("OpenSeadragon is not vendored (make vendor needs npm)")
    slide, truth = _slide_and_truth(tmp_path)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.set_input_files("#file-input", [str(slide), str(truth)])
        page.get_by_text("Analysis of case.tif complete.").wait_for(timeout=120_000)
        assert page.locator("#deepzoom").is_visible() and not page.locator("#viewer").is_visible()
        assert page.locator("#viewer-missing").is_hidden()
        page.locator(OSD_CANVAS).first.wait_for()
        _settled(page)
        assert any("/dzi_files/" in url for url in requested)
        assert any("/overlay_files/" in url for url in requested)
        screenshot(page, "deepzoom-overview")

        # The most suspicious tile, then one screen pixel per slide pixel (level 12 of 12).
        page.locator("#gallery button").first.click()
        page.get_by_role("button", name="Zoom to full resolution").click()
        _settled(page)
        assert any("/dzi_files/12/" in url for url in requested)
        assert any("/overlay_files/12/" in url for url in requested)
        assert page.evaluate(RED_FRACTION, OSD_CANVAS) > 0.3  # the tumour under a red heatmap
        screenshot(page, "deepzoom-full-resolution")

        inspector = page.locator("#inspect-body")
        inspector.wait_for()
        facts = page.locator("#inspect-facts").inner_text()
        for term in ("row", "IDC probability (map)", "IDC probability (tile alone)", "Level-0 box"):
            assert term in facts
        assert "Ground truth\nIDC" in facts
        page.wait_for_function(
            "() => !document.getElementById('inspect-gradcam').hidden ||"
            " document.getElementById('inspect-gradcam-message').textContent"
            ".startsWith('Explanation unavailable:')"
        )
        page.locator("#inspect").screenshot(path=str(ARTIFACTS / "deepzoom-inspect.png"))

        # A click on the slide inspects the tile under it.
        box = page.locator(OSD_CANVAS).first.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_timeout(300)
        assert "row" in page.locator("#inspect-facts").inner_text()

        # The threshold hides low tiles (server-side); the truth is a layer of its own.
        page.get_by_role("button", name="Fit").click()
        page.locator("#overlay-threshold").fill("0.9")
        page.locator("#overlay-threshold").dispatch_event("change")
        _settled(page)
        assert any("/overlay_files/" in url and "threshold=0.90" in url for url in requested)
        screenshot(page, "deepzoom-threshold")
        page.get_by_label("Ground truth layer").check()
        _settled(page)
        assert any("/truth_files/" in url for url in requested)
        screenshot(page, "deepzoom-truth")

        with page.expect_download() as download_info:
            page.get_by_role("button", name="IDC regions (GeoJSON for QuPath)").click()
        saved = tmp_path / "regions.geojson"
        download_info.value.save_as(saved)
        collection = json.loads(saved.read_text())
        assert collection["type"] == "FeatureCollection" and collection["features"]
        feature = collection["features"][0]
        assert feature["properties"]["objectType"] == "annotation"
        assert feature["properties"]["classification"]["name"] == "IDC"
        page.locator("#downloads").screenshot(path=str(ARTIFACTS / "deepzoom-downloads.png"))
        with page.expect_download() as download_info:
            page.get_by_role("button", name="Tile scores (CSV)").click()
        assert download_info.value.suggested_filename.endswith("tiles.csv")
    finally:
        _delete_all(page)


def test_missing_viewer_files_are_explained(browser: Any, server_url: str) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = context.new_page()
        page.route("**/vendor/openseadragon/**", lambda route: route.fulfill(status=404))
        page.goto(server_url)
        page.wait_for_load_state("networkidle")
        # Nothing analysed yet: the message is in the (hidden) result panel, ready.
        message = page.locator("#viewer-missing").text_content()
        assert "deep-zoom viewer is not installed" in message and "make vendor" in message
        assert page.locator("#deepzoom").get_attribute("hidden") is not None
        assert page.locator("#viewer").get_attribute("hidden") is None
    finally:
        context.close()
