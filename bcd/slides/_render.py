"""Pictures of an analysis: heatmap over the thumbnail, legend, truth comparison."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bcd.slides._analysis import SlideAnalysis

# Reversed ColorBrewer RdYlBu: blue (no IDC) → pale yellow (0.5) → red (IDC).
_ANCHORS = np.array(
    [
        [44, 123, 182],
        [171, 217, 233],
        [255, 255, 191],
        [253, 174, 97],
        [215, 25, 28],
    ],
    dtype=np.float32,
)
TRUTH_COLOURS = {0: (44, 123, 182), 1: (215, 25, 28)}
_INK = (33, 37, 41)


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` px (no system fonts needed)."""
    return ImageFont.load_default(size=size)


def colorize(values: np.ndarray) -> np.ndarray:
    """Map probabilities in [0, 1] to RGB colours of the heatmap scale.

    Args:
        values: float array of any shape (NaN maps to 0).

    Returns:
        uint8 array of shape ``values.shape + (3,)``.
    """
    clipped = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.minimum(np.floor(clipped).astype(int), len(_ANCHORS) - 2)
    weight = (clipped - low)[..., None]
    colours = _ANCHORS[low] * (1 - weight) + _ANCHORS[low + 1] * weight
    return colours.round().astype(np.uint8)


def grid_to_thumbnail_index(
    analysis: SlideAnalysis, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """For every thumbnail row and column, the grid row and column under it."""
    grid = analysis.grid
    cell = grid.stride * grid.level0_per_model / analysis.thumbnail_downsample
    rows = np.minimum(((np.arange(height) + 0.5) / cell).astype(int), grid.rows - 1)
    cols = np.minimum(((np.arange(width) + 0.5) / cell).astype(int), grid.cols - 1)
    return rows, cols


def _cells_to_thumbnail(analysis: SlideAnalysis, cells: np.ndarray) -> np.ndarray:
    """Spread per-tile ``cells`` ``(rows, cols, c)`` over the thumbnail's pixels.

    The same as ``cells[rows][:, cols]`` with the indices of
    :func:`grid_to_thumbnail_index`; as those never decrease, each cell is
    repeated over its run of pixels, which is far cheaper than gathering and
    gives a contiguous array.
    """
    height, width = analysis.thumbnail.shape[:2]
    rows, cols = grid_to_thumbnail_index(analysis, width, height)
    row_runs = np.bincount(rows, minlength=cells.shape[0])
    col_runs = np.bincount(cols, minlength=cells.shape[1])
    return np.repeat(np.repeat(cells, row_runs, axis=0), col_runs, axis=1)


def overlay_rgba(analysis: SlideAnalysis) -> np.ndarray:
    """The heatmap alone, aligned with the thumbnail: opaque colour on scored tiles.

    Returns:
        uint8 ``(h, w, 4)`` with alpha 0 where no tile was scored.
    """
    cells = np.zeros((analysis.grid.rows, analysis.grid.cols, 4), dtype=np.uint8)
    cells[..., :3] = colorize(analysis.probabilities)
    cells[..., 3] = np.where(analysis.tissue, 255, 0)
    return _cells_to_thumbnail(analysis, cells)


def blend(base: np.ndarray, overlay: np.ndarray, opacity: float) -> Image.Image:
    """Alpha-blend an RGBA overlay onto an RGB image at ``opacity`` (in Pillow's C code)."""
    layer = Image.fromarray(overlay, "RGBA")
    if opacity < 1.0:
        alpha = layer.getchannel("A").point(lambda value: round(value * opacity))
        layer.putalpha(alpha)
    return Image.alpha_composite(Image.fromarray(base).convert("RGBA"), layer).convert("RGB")


def legend(height: int, threshold: float, title: str = "IDC probability") -> Image.Image:
    """A vertical colour bar with ticks and the decision threshold marked.

    Text and bar scale with ``height`` so the legend stays legible beside
    large pictures.
    """
    unit = max(1.0, height / 500)
    width = round(170 * unit)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((round(8 * unit), round(6 * unit)), title, fill=_INK, font=font(round(15 * unit)))
    top, bottom, left = round(36 * unit), height - round(16 * unit), round(14 * unit)
    bar_width, tick = round(24 * unit), round(6 * unit)
    bar_height = max(bottom - top, 10)
    values = np.linspace(1.0, 0.0, bar_height)
    bar = np.repeat(colorize(values)[:, None, :], bar_width, axis=1)
    image.paste(Image.fromarray(bar), (left, top))
    draw.rectangle((left - 1, top - 1, left + bar_width, top + bar_height), outline=_INK)
    label_font = font(round(13 * unit))
    for value in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + round((1 - value) * (bar_height - 1))
        draw.line((left + bar_width, y, left + bar_width + tick, y), fill=_INK)
        draw.text(
            (left + bar_width + tick + 4, y - round(7 * unit)),
            f"{value:.2f}",
            fill=_INK,
            font=label_font,
        )
    y = top + round((1 - threshold) * (bar_height - 1))
    draw.line((left - tick, y, left + bar_width + tick, y), fill=_INK, width=max(2, round(unit)))
    draw.text(
        (left + bar_width + round(48 * unit), y - round(7 * unit)),
        "threshold",
        fill=_INK,
        font=font(round(12 * unit)),
    )
    return image


def heatmap_image(analysis: SlideAnalysis, opacity: float = 0.55) -> Image.Image:
    """The heatmap over the slide thumbnail, with a colour-scale legend at the right."""
    picture = blend(analysis.thumbnail, overlay_rgba(analysis), opacity)
    key = legend(max(picture.height, 220), analysis.threshold)
    canvas = Image.new(
        "RGB", (picture.width + key.width + 10, max(picture.height, key.height)), "white"
    )
    canvas.paste(picture, (0, 0))
    canvas.paste(key, (picture.width + 10, 0))
    return canvas


def truth_rgba(analysis: SlideAnalysis, sampled_truth: np.ndarray) -> np.ndarray:
    """The ground truth as an overlay aligned with the thumbnail (blue 0, red 1)."""
    cells = np.zeros((*sampled_truth.shape, 4), dtype=np.uint8)
    for label, colour in TRUTH_COLOURS.items():
        cells[sampled_truth == label] = (*colour, 255)
    return _cells_to_thumbnail(analysis, cells)


def comparison_image(
    analysis: SlideAnalysis, sampled_truth: np.ndarray, caption: str = "", max_panel: int = 1024
) -> Image.Image:
    """Predicted map beside the ground truth, titled, for side-by-side reading.

    Args:
        analysis: The analysis.
        sampled_truth: Truth on the analysis grid (:func:`bcd.slides.truth_for_grid`).
        caption: Line under the pictures (e.g. the per-slide AUC).
        max_panel: Longest side of each of the two pictures.
    """
    predicted = blend(analysis.thumbnail, overlay_rgba(analysis), 0.7)
    truth = blend(analysis.thumbnail, truth_rgba(analysis, sampled_truth), 0.7)
    if max(predicted.size) > max_panel:
        scale = max_panel / max(predicted.size)
        size = (max(1, round(predicted.width * scale)), max(1, round(predicted.height * scale)))
        predicted = predicted.resize(size, Image.Resampling.BOX)
        truth = truth.resize(size, Image.Resampling.BOX)
    text = max(14, round(predicted.width / 28))
    gap, header = text, round(text * 2)
    footer = round(text * 1.8) if caption else 6
    width = predicted.width * 2 + gap
    canvas = Image.new("RGB", (width, predicted.height + header + footer), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, text // 2), "Predicted IDC probability", fill=_INK, font=font(text))
    draw.text(
        (predicted.width + gap + 4, text // 2),
        "Ground truth (red IDC, blue no IDC)",
        fill=_INK,
        font=font(text),
    )
    canvas.paste(predicted, (0, header))
    canvas.paste(truth, (predicted.width + gap, header))
    if caption:
        draw.text((4, header + predicted.height + text // 3), caption, fill=_INK, font=font(text))
    return canvas
