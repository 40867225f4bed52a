"""Deep Zoom tile latency: rendered on demand vs the bare read + encode, and from the cache.

One run writes a JPEG-tiled pyramidal TIFF (the synthetic test slide enlarged
``--upscale`` times, 1 µm/px, levels /1, /4, /16), analyses it with a numpy
classifier, and opens its :class:`bcd.slides._deepzoom.AnalysisView`. Then,
for the same full-resolution tiles:

- *baseline*: read the tile's level-0 box straight from the slide reader and
  encode it as JPEG with Pillow (the least a tile server must do);
- *slide tile*: :meth:`AnalysisView.slide_tile` (box maths, read, resize, encode);
- *overlay tile*: :meth:`AnalysisView.layer_tile` for the heatmap (cell lookup,
  PNG with alpha);
- *cached*: the same slide tiles again through the :class:`TileCache`.

Medians over the tiles are printed in milliseconds with the ratio to the
baseline (target: slide tiles within 1.5x of it; cached tiles far below it).

    .venv/bin/python bench/deepzoom_bench.py [--upscale 8] [--tiles 60]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.slides.conftest import darkness_predict, synthetic_slide
from tests.slides.test_routes import write_pyramidal_tiff


def _median_ms(timings: list[float]) -> float:
    return statistics.median(timings) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upscale", type=int, default=8, help="slide = 800x600 x this")
    parser.add_argument("--tiles", type=int, default=60, help="full-resolution tiles to time")
    args = parser.parse_args()

    from PIL import Image

    from bcd.slides import AnalysisOptions, analyze_file, open_slide
    from bcd.slides._deepzoom import DeepZoomViews

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary) / "analysis"
        folder.mkdir()
        slide = write_pyramidal_tiff(folder / "slide.tif", synthetic_slide(), args.upscale)
        analyze_file(slide, darkness_predict, folder / "outputs")
        views = DeepZoomViews()
        view = views.view("bench", folder, AnalysisOptions())
        geometry = view.geometry
        level = geometry.max_level
        cols, rows = geometry.tile_counts(level)
        # Spread over the whole level (glass, stroma and tumour alike).
        step = max(1, cols * rows // args.tiles)
        tiles = [(index % cols, index // cols) for index in range(0, cols * rows, step)]
        print(f"slide {geometry.width}x{geometry.height}, level {level}: {cols}x{rows} tiles")

        baseline, slide_times, overlay_times, cached_times = [], [], [], []
        with open_slide(slide) as reader:
            for col, row in tiles:
                left, top, right, bottom = geometry.tile_box(level, col, row)
                started = time.perf_counter()
                region = reader.read_region(left, top, right - left, bottom - top)
                Image.fromarray(region).save(io.BytesIO(), format="JPEG", quality=85)
                baseline.append(time.perf_counter() - started)
        for col, row in tiles:
            started = time.perf_counter()
            views.cache.get_or_render(
                ("bench", "slide", level, col, row), partial(view.slide_tile, level, col, row)
            )
            slide_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            view.layer_tile("overlay", level, col, row, None)
            overlay_times.append(time.perf_counter() - started)
        for col, row in tiles:
            started = time.perf_counter()
            views.cache.get_or_render(
                ("bench", "slide", level, col, row), partial(view.slide_tile, level, col, row)
            )
            cached_times.append(time.perf_counter() - started)
        views.forget("bench")

    reference = _median_ms(baseline)
    print(f"{'':14s} {'median ms':>10s} {'vs baseline':>12s}")
    for name, timings in (
        ("baseline", baseline),
        ("slide tile", slide_times),
        ("overlay tile", overlay_times),
        ("cached tile", cached_times),
    ):
        median = _median_ms(timings)
        print(f"{name:14s} {median:10.3f} {median / reference:11.2f}x")


if __name__ == "__main__":
    main()
