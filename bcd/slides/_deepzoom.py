"""Deep Zoom (DZI) pyramids of an analysed slide and of its heatmap, rendered on demand.

A Deep Zoom image of ``W x H`` pixels has levels ``0..max_level`` with
``max_level = ceil(log2(max(W, H)))``; level ``L`` is ``2 ** (max_level - L)``
times smaller than the full image and is cut into ``tile_size`` squares that
overlap their neighbours by ``overlap`` pixels (tile ``(col, row)`` starts at
``col * tile_size - overlap``). Every layer here has the slide's level-0 size,
so a viewer stacks them with no registration:

- the slide itself (JPEG tiles), read from the slide's pyramid level nearest
  below the tile's scale, or from the analysis thumbnail once a tile is
  coarser than it (so low levels of a flat giant image stay cheap);
- the heatmap overlay and the ground truth (PNG tiles with alpha), drawn from
  the per-tile grid: every pixel takes the colour of the grid cell under it,
  transparent off the scored tissue (or, with a threshold, below it).

Encoded tiles are kept in a byte-bounded LRU cache shared by all analyses.
"""

from __future__ import annotations

import io
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bcd.errors import InvalidInputError, NotFoundError
from bcd.slides._analysis import DEFAULT_THRESHOLD, AnalysisOptions
from bcd.slides._grid import TileGrid, plan_grid
from bcd.slides._render import TRUTH_COLOURS, colorize

#: Edge of a Deep Zoom tile, without its overlap (254 + 2 x 1 = 256 px images).
DZI_TILE_SIZE = 254
#: Pixels a tile shares with each neighbour.
DZI_OVERLAP = 1
#: The layers besides the slide: the heatmap and the ground truth.
LAYERS = ("overlay", "truth")
_JPEG_QUALITY = 85
_CACHE_BYTES = 64 * 1024**2
_OPEN_VIEWS = 4


@dataclass(frozen=True)
class DeepZoomGeometry:
    """Levels and tiles of a Deep Zoom image.

    Attributes:
        width: Full-resolution width in pixels.
        height: Full-resolution height in pixels.
        tile_size: Tile edge without overlap.
        overlap: Pixels shared with each neighbouring tile.
    """

    width: int
    height: int
    tile_size: int = DZI_TILE_SIZE
    overlap: int = DZI_OVERLAP

    @property
    def max_level(self) -> int:
        """The full-resolution level."""
        return max(0, math.ceil(math.log2(max(self.width, self.height, 1))))

    def scale(self, level: int) -> int:
        """Full-resolution pixels per pixel of ``level``."""
        return int(2 ** (self.max_level - level))

    def level_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of ``level``."""
        scale = self.scale(level)
        return max(1, math.ceil(self.width / scale)), max(1, math.ceil(self.height / scale))

    def tile_counts(self, level: int) -> tuple[int, int]:
        """``(columns, rows)`` of tiles at ``level``."""
        width, height = self.level_size(level)
        return math.ceil(width / self.tile_size), math.ceil(height / self.tile_size)

    def tile_box(self, level: int, col: int, row: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of a tile in pixels of its level, overlap included.

        Raises:
            InvalidInputError: For a level or a tile that does not exist.
        """
        if not 0 <= level <= self.max_level:
            raise InvalidInputError(
                f"Deep Zoom level {level} does not exist; this image has levels 0..{self.max_level}"
            )
        cols, rows = self.tile_counts(level)
        if not (0 <= col < cols and 0 <= row < rows):
            raise InvalidInputError(
                f"tile {col}_{row} is outside level {level}, which has {cols} x {rows} tiles"
            )
        width, height = self.level_size(level)
        left = col * self.tile_size - (self.overlap if col else 0)
        top = row * self.tile_size - (self.overlap if row else 0)
        right = min((col + 1) * self.tile_size + self.overlap, width)
        bottom = min((row + 1) * self.tile_size + self.overlap, height)
        return left, top, right, bottom

    def xml(self, image_format: str) -> str:
        """The ``.dzi`` descriptor (Deep Zoom schema of 2008)."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{image_format}" Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{self.width}" Height="{self.height}"/></Image>\n'
        )


class TileCache:
    """A thread-safe LRU cache of encoded tiles, bounded by their total bytes.

    Args:
        max_bytes: Most bytes kept; the least recently used tiles go first.
    """

    def __init__(self, max_bytes: int = _CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get_or_render(self, key: tuple[Any, ...], render: Callable[[], bytes]) -> bytes:
        """The cached tile under ``key``, or ``render()``'s, then kept."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
        data = render()
        with self._lock:
            if key not in self._items:
                self._items[key] = data
                self._bytes += len(data)
            while self._bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= len(dropped)
        return data

    def forget(self, prefix: Any) -> None:
        """Drop every tile whose key starts with ``prefix`` (an analysis id)."""
        with self._lock:
            for key in [key for key in self._items if key[0] == prefix]:
                self._bytes -= len(self._items.pop(key))

    def __len__(self) -> int:
        return len(self._items)


def _encode(pixels: np.ndarray, image_format: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    if image_format == "jpeg":
        Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    else:
        Image.fromarray(pixels, "RGBA").save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(pixels))
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0))


def _read_scaled(
    reader: Any, scale: float, left: int, top: int, right: int, bottom: int
) -> np.ndarray:
    """A box of a Deep Zoom level (``scale`` level-0 px per pixel), read from a finer level."""
    slide_level = reader.best_level_for_downsample(scale)
    factor = scale / reader.level_downsamples[slide_level]
    x0, y0 = math.floor(left * factor), math.floor(top * factor)
    return np.asarray(
        reader.read_region(
            x0,
            y0,
            max(1, math.ceil(right * factor) - x0),
            max(1, math.ceil(bottom * factor) - y0),
            slide_level,
        )
    )


class AnalysisView:
    """The Deep Zoom layers and per-tile scores of one completed analysis.

    Args:
        folder: The analysis folder (the slide file ``slide*`` and ``outputs/``).
        options: The options the analysis ran with (to lay the same tile grid).

    Raises:
        NotFoundError: The slide or the probability map is gone.
        InvalidInputError: The slide cannot be read.
    """

    def __init__(self, folder: Path, options: AnalysisOptions) -> None:
        from PIL import Image

        from bcd.slides.readers import open_slide

        outputs = folder / "outputs"
        slides = sorted(folder.glob("slide*"))
        if not slides or not (outputs / "probabilities.npy").is_file():
            raise NotFoundError(f"the slide or the outputs of analysis {folder.name} are gone")
        self.probabilities = np.load(outputs / "probabilities.npy", allow_pickle=False)
        own = outputs / "tile_probabilities.npy"
        self.tile_probabilities = np.load(own, allow_pickle=False) if own.is_file() else None
        truth = outputs / "truth.npy"
        self.truth = np.load(truth, allow_pickle=False) if truth.is_file() else None
        report = json.loads((outputs / "report.json").read_text())
        self.threshold = float(report["analysis"].get("threshold", DEFAULT_THRESHOLD))
        with Image.open(outputs / "thumbnail.jpg") as thumbnail:
            self.thumbnail = np.asarray(thumbnail.convert("RGB"))
        self._slide_path = slides[0]
        self._reader: Any = open_slide(self._slide_path)
        self._lock = threading.Lock()
        self.grid: TileGrid = plan_grid(
            self._reader, stride=options.stride, mpp=options.mpp, target_mpp=options.model_mpp
        )
        width, height = self._reader.dimensions
        self.geometry = DeepZoomGeometry(width, height)
        self.thumbnail_downsample = width / self.thumbnail.shape[1]

    @property
    def cell(self) -> float:
        """Edge of a grid cell (one heatmap square) in level-0 pixels."""
        return self.grid.stride * self.grid.level0_per_model

    def close(self) -> None:
        """Close the slide file (a request still holding this view reopens it for itself)."""
        with self._lock:
            if self._reader is not None:
                self._reader.close()
            self._reader = None

    def slide_tile(self, level: int, col: int, row: int) -> bytes:
        """A JPEG tile of the slide.

        Raises:
            InvalidInputError: For a level or tile that does not exist.
        """
        left, top, right, bottom = self.geometry.tile_box(level, col, row)
        scale = self.geometry.scale(level)
        width, height = right - left, bottom - top
        if scale >= self.thumbnail_downsample:
            factor = scale / self.thumbnail_downsample
            region = self._from_thumbnail(
                left * factor, top * factor, width * factor, height * factor
            )
            return _encode(_resize(region, width, height), "jpeg")
        with self._lock:
            if self._reader is None:
                from bcd.slides.readers import open_slide

                with open_slide(self._slide_path) as reader:
                    region = _read_scaled(reader, scale, left, top, right, bottom)
            else:
                region = _read_scaled(self._reader, scale, left, top, right, bottom)
        return _encode(_resize(region, width, height), "jpeg")

    def _from_thumbnail(self, x: float, y: float, width: float, height: float) -> np.ndarray:
        rows, cols = self.thumbnail.shape[:2]
        x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
        x1 = min(cols, max(x0 + 1, math.ceil(x + width)))
        y1 = min(rows, max(y0 + 1, math.ceil(y + height)))
        return self.thumbnail[y0:y1, x0:x1]

    def layer_tile(
        self, layer: str, level: int, col: int, row: int, threshold: float | None
    ) -> bytes:
        """A PNG tile (RGBA) of the heatmap (``overlay``) or the ground truth (``truth``).

        Args:
            layer: ``overlay`` or ``truth``.
            level: Deep Zoom level.
            col: Tile column.
            row: Tile row.
            threshold: For the overlay, hide tiles whose probability is below it.

        Raises:
            NotFoundError: No such layer (or no ground truth for this analysis).
            InvalidInputError: For a level or tile that does not exist.
        """
        cells = self.layer_cells(layer, threshold)
        left, top, right, bottom = self.geometry.tile_box(level, col, row)
        scale = self.geometry.scale(level)
        # The grid cell under the centre of every pixel of the tile, -1 past the grid.
        rows = np.floor((np.arange(top, bottom) + 0.5) * scale / self.cell).astype(np.int64)
        cols = np.floor((np.arange(left, right) + 0.5) * scale / self.cell).astype(np.int64)
        grid_rows, grid_cols = cells.shape[:2]
        rows[rows >= grid_rows] = -1
        cols[cols >= grid_cols] = -1
        padded = np.zeros((grid_rows + 1, grid_cols + 1, 4), dtype=np.uint8)
        padded[:grid_rows, :grid_cols] = cells  # index -1 lands on the transparent pad
        return _encode(padded[rows][:, cols], "png")

    def layer_cells(self, layer: str, threshold: float | None) -> np.ndarray:
        """One RGBA colour per grid cell for ``layer``.

        Raises:
            NotFoundError: Unknown layer, or ``truth`` without ground truth.
        """
        cells = np.zeros((*self.probabilities.shape, 4), dtype=np.uint8)
        if layer == "overlay":
            scored = ~np.isnan(self.probabilities)
            if threshold is not None:
                scored &= np.nan_to_num(self.probabilities, nan=0.0) >= threshold
            cells[..., :3] = colorize(self.probabilities)
            cells[..., 3] = np.where(scored, 255, 0)
            return cells
        if layer == "truth" and self.truth is not None:
            for label, colour in TRUTH_COLOURS.items():
                cells[self.truth == label] = (*colour, 255)
            return cells
        if layer == "truth":
            raise NotFoundError("this analysis has no ground truth; upload one with the slide")
        raise NotFoundError(f"no layer {layer!r}; layers are: {', '.join(LAYERS)}")

    def tile_score(self, row: int, col: int) -> dict[str, Any]:
        """What the analysis found at one grid cell.

        Returns:
            ``row``, ``col``, level-0 ``x``/``y``/``width``/``height`` of the
            tile the model saw, ``tissue`` (scored or not), ``probability``
            (the map's value, with slide context when applied),
            ``tile_probability`` (the tile alone), ``idc`` (at the threshold),
            ``threshold`` and ``truth`` (1, 0, or ``None`` when unknown).

        Raises:
            InvalidInputError: If ``(row, col)`` is outside the grid.
        """
        grid = self.grid
        if not (0 <= row < grid.rows and 0 <= col < grid.cols):
            raise InvalidInputError(
                f"tile ({row}, {col}) is outside the {grid.rows}x{grid.cols} grid of this slide"
            )
        value = float(self.probabilities[row, col])
        tissue = not math.isnan(value)
        own = value if self.tile_probabilities is None else float(self.tile_probabilities[row, col])
        x, y = grid.tile_origin(row, col)
        truth = None if self.truth is None else int(self.truth[row, col])
        return {
            "row": row,
            "col": col,
            "x": x,
            "y": y,
            "width": grid.footprint,
            "height": grid.footprint,
            "tissue": tissue,
            "probability": round(value, 4) if tissue else None,
            "tile_probability": round(own, 4) if tissue and not math.isnan(own) else None,
            "idc": bool(tissue and value >= self.threshold),
            "threshold": self.threshold,
            "truth": truth if truth is not None and truth >= 0 else None,
        }

    def describe(self, base_url: str) -> dict[str, Any]:
        """What a viewer needs: sizes, the grid, and where each layer's DZI is."""
        width, height = self.geometry.width, self.geometry.height
        return {
            "width": width,
            "height": height,
            "tile_size": self.geometry.tile_size,
            "overlap": self.geometry.overlap,
            "max_level": self.geometry.max_level,
            "grid": {
                "rows": self.grid.rows,
                "cols": self.grid.cols,
                "cell": self.cell,
                "footprint": self.grid.footprint,
            },
            "threshold": self.threshold,
            "slide": f"{base_url}/dzi",
            "overlay": f"{base_url}/overlay.dzi",
            "truth": f"{base_url}/truth.dzi" if self.truth is not None else None,
        }


class DeepZoomViews:
    """The open :class:`AnalysisView` of the last few analyses, and the shared tile cache.

    Args:
        cache_bytes: Bound of the tile cache.
        open_views: Analyses kept open (each holds its slide file open).

    Thread-safe.
    """

    def __init__(self, cache_bytes: int = _CACHE_BYTES, open_views: int = _OPEN_VIEWS) -> None:
        self.cache = TileCache(cache_bytes)
        self._views: OrderedDict[str, AnalysisView] = OrderedDict()
        self._open_views = open_views
        self._lock = threading.Lock()

    def view(self, analysis_id: str, folder: Path, options: AnalysisOptions) -> AnalysisView:
        """The view of an analysis, opened on first use."""
        with self._lock:
            found = self._views.get(analysis_id)
            if found is not None:
                self._views.move_to_end(analysis_id)
                return found
        opened = AnalysisView(folder, options)
        with self._lock:
            found = self._views.get(analysis_id)
            if found is not None:
                opened.close()
                return found
            self._views[analysis_id] = opened
            while len(self._views) > self._open_views:
                _, oldest = self._views.popitem(last=False)
                oldest.close()
        return opened

    def forget(self, analysis_id: str) -> None:
        """Close an analysis's view and drop its tiles (it was deleted)."""
        with self._lock:
            view = self._views.pop(analysis_id, None)
        if view is not None:
            view.close()
        self.cache.forget(analysis_id)
