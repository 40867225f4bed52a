"""The tile grid: which pyramid level to read, and where each 50 px tile lies.

The training patches come from whole-mount slides scanned at 40x (0.25 µm/px)
and downsampled 16:1 before cutting (Janowczyk & Madabhushi 2016): each 50 px
patch is 2.5x apparent magnification, about 4 µm/px, 200 µm of tissue. That
is why a patient's patches tile a slide only ~3,000 px wide. A slide is read
at the pyramid level closest to the model's resolution (never coarser when a
finer one exists) and resampled to it, so a tile always covers the tissue
area the model learnt from. The grid lives in this "model pixel" space;
``footprint`` converts to level-0 pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bcd.errors import InvalidInputError, PayloadTooLargeError
from bcd.slides.readers import BaseSlideReader

#: Microns per pixel of the training patches: 40x scans (0.25 µm/px) downsampled 16:1.
MODEL_MPP = 4.0
#: Edge of the model's input patch, in pixels.
TILE_SIZE = 50
# Within this relative difference a level is used as is, without resampling.
_MPP_TOLERANCE = 0.1


@dataclass(frozen=True)
class TileGrid:
    """Where tiles lie on a slide and how to read them.

    Attributes:
        level: Pyramid level read.
        scale: Model pixels per pixel of that level (1.0 = no resampling).
        slide_mpp: Microns per level-0 pixel used (read or assumed).
        tile_size: Tile edge in model pixels (50).
        stride: Distance between tile origins in model pixels.
        rows: Number of tile rows.
        cols: Number of tile columns.
        level0_per_model: Level-0 pixels per model pixel.
        notes: Human-readable remarks on what was assumed or adjusted.
    """

    level: int
    scale: float
    slide_mpp: float
    tile_size: int
    stride: int
    rows: int
    cols: int
    level0_per_model: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def tile_count(self) -> int:
        """Number of grid cells (tissue or not)."""
        return self.rows * self.cols

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left corner of tile ``(row, col)`` in level-0 pixels, ``(x, y)``."""
        return (
            round(col * self.stride * self.level0_per_model),
            round(row * self.stride * self.level0_per_model),
        )

    @property
    def footprint(self) -> int:
        """Tile edge in level-0 pixels."""
        return round(self.tile_size * self.level0_per_model)

    @property
    def model_mpp(self) -> float:
        """Microns per model pixel actually used (the level's, when not resampled)."""
        return self.slide_mpp * self.level0_per_model

    def cell_area_mm2(self) -> float:
        """Area of one grid cell (stride x stride model pixels), in mm²."""
        side_mm = self.stride * self.model_mpp / 1000
        return side_mm * side_mm


def magnification(mpp: float) -> str:
    """Apparent objective magnification of a resolution (40x ≈ 0.25 µm/px)."""
    return f"{10 / mpp:.3g}x"


def plan_grid(
    reader: BaseSlideReader,
    stride: int = TILE_SIZE,
    mpp: float | None = None,
    target_mpp: float = MODEL_MPP,
    tile_size: int = TILE_SIZE,
) -> TileGrid:
    """Choose the level and lay the tile grid over a slide.

    Args:
        reader: The open slide.
        stride: Step between tiles in model pixels (``tile_size`` = no overlap).
        mpp: Microns per pixel to use instead of the file's own (``None`` = the file's).
        target_mpp: The model's training resolution.
        tile_size: The model's input edge.

    Returns:
        The grid.

    Raises:
        InvalidInputError: For a non-positive stride or mpp.
    """
    if stride <= 0 or stride > 10 * tile_size:
        raise InvalidInputError(f"stride {stride} must be between 1 and {10 * tile_size} pixels")
    if mpp is not None and not 0 < mpp < 100:
        raise InvalidInputError(f"mpp {mpp} is not a plausible resolution (0 < mpp < 100 µm/px)")
    notes: list[str] = []
    slide_mpp: float
    if mpp is not None:
        slide_mpp = mpp
        notes.append(f"Resolution given by the user: {mpp:.3f} µm/px.")
    elif reader.mpp is not None:
        slide_mpp = reader.mpp
    else:
        slide_mpp = target_mpp
        notes.append(
            f"The file records no microns-per-pixel; assumed {target_mpp:g} µm/px "
            f"({magnification(target_mpp)}), the model's training resolution, so tiles "
            "were read at full resolution."
        )
    wanted_downsample = target_mpp / slide_mpp
    level = reader.best_level_for_downsample(wanted_downsample * (1 + _MPP_TOLERANCE))
    level_downsample = reader.level_downsamples[level]
    scale = slide_mpp * level_downsample / target_mpp
    if abs(scale - 1) <= _MPP_TOLERANCE:
        # Close enough: one level pixel is one model pixel, no resampling.
        scale, level0_per_model = 1.0, level_downsample
    else:
        level0_per_model = target_mpp / slide_mpp
        if scale > 1:
            notes.append(
                f"The slide's finest level is {slide_mpp * level_downsample:.3f} µm/px, coarser "
                f"than the model's {target_mpp:g} µm/px; tiles were upsampled {scale:.2f}x, "
                "expect lower accuracy."
            )
    width0, height0 = reader.dimensions
    return TileGrid(
        level=level,
        scale=scale,
        slide_mpp=float(slide_mpp),
        tile_size=tile_size,
        stride=stride,
        rows=_count(height0 / level0_per_model, tile_size, stride),
        cols=_count(width0 / level0_per_model, tile_size, stride),
        level0_per_model=level0_per_model,
        notes=tuple(notes),
    )


def check_tile_limit(grid: TileGrid, max_tiles: int) -> None:
    """Refuse a grid with more cells than ``max_tiles`` before any tile is read.

    Raises:
        PayloadTooLargeError: Naming the grid's cell count and the limit.
    """
    if grid.tile_count > max_tiles:
        raise PayloadTooLargeError(
            f"this slide at stride {grid.stride} is a {grid.rows}x{grid.cols} grid of "
            f"{grid.tile_count:,} tiles, over the limit of {max_tiles:,} tiles per analysis "
            "(BCD_MAX_SLIDE_TILES); use a larger stride or analyse a region of the slide"
        )


def _count(length: float, tile_size: int, stride: int) -> int:
    """Tiles needed to cover ``length`` (the last one may hang over the edge)."""
    if length <= tile_size:
        return 1
    return math.ceil((length - tile_size) / stride) + 1


def read_band(
    reader: BaseSlideReader, grid: TileGrid, first_row: int, row_count: int
) -> np.ndarray:
    """Read the strip of slide under grid rows ``first_row .. first_row+row_count-1``.

    Args:
        reader: The open slide.
        grid: The grid.
        first_row: First grid row of the band.
        row_count: Number of grid rows.

    Returns:
        uint8 ``(height, width, 3)`` in model pixels, where height covers the
        rows (``(row_count - 1) * stride + tile_size``) and width covers all
        columns; outside the slide is white.
    """
    top = first_row * grid.stride
    height = (row_count - 1) * grid.stride + grid.tile_size
    width = (grid.cols - 1) * grid.stride + grid.tile_size
    level_per_model = grid.level0_per_model / reader.level_downsamples[grid.level]
    if grid.scale == 1.0:
        return reader.read_region(0, top, width, height, grid.level)
    y0 = math.floor(top * level_per_model)
    level_width = max(1, math.ceil(width * level_per_model))
    level_height = max(1, math.ceil((top + height) * level_per_model) - y0)
    region = reader.read_region(0, y0, level_width, level_height, grid.level)
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(region)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    return np.asarray(resized)


def band_tiles(band: np.ndarray, grid: TileGrid, row_count: int) -> np.ndarray:
    """Cut a band into tiles without copying (a strided view).

    Args:
        band: The output of :func:`read_band`.
        grid: The grid.
        row_count: Grid rows in the band.

    Returns:
        uint8 view ``(row_count, cols, tile, tile, 3)``.
    """
    from numpy.lib.stride_tricks import as_strided

    band = np.ascontiguousarray(band)
    row_stride, col_stride, channel_stride = band.strides
    return as_strided(
        band,
        shape=(row_count, grid.cols, grid.tile_size, grid.tile_size, 3),
        strides=(
            row_stride * grid.stride,
            col_stride * grid.stride,
            row_stride,
            col_stride,
            channel_stride,
        ),
        writeable=False,
    )


def read_tile(reader: BaseSlideReader, grid: TileGrid, row: int, col: int) -> np.ndarray:
    """The model's view of one tile: uint8 ``(tile, tile, 3)`` in model pixels.

    Raises:
        InvalidInputError: If ``(row, col)`` is outside the grid.
    """
    if not (0 <= row < grid.rows and 0 <= col < grid.cols):
        raise InvalidInputError(
            f"tile ({row}, {col}) is outside the {grid.rows}x{grid.cols} grid of this slide"
        )
    left, top = col * grid.stride, row * grid.stride
    if grid.scale == 1.0:
        return reader.read_region(left, top, grid.tile_size, grid.tile_size, grid.level)
    level_per_model = grid.level0_per_model / reader.level_downsamples[grid.level]
    x0, y0 = math.floor(left * level_per_model), math.floor(top * level_per_model)
    size = max(1, math.ceil(grid.tile_size * level_per_model))
    region = reader.read_region(x0, y0, size, size, grid.level)
    from PIL import Image

    resized = Image.fromarray(np.ascontiguousarray(region)).resize(
        (grid.tile_size, grid.tile_size), Image.Resampling.BILINEAR
    )
    return np.asarray(resized)
