"""The one-page report a pathologist can file, as PNG and PDF (Pillow only)."""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from bcd.slides._render import _INK, font

PAGE_SIZE = (1240, 1754)  # A4 at 150 dpi
PAGE_DPI = 150
_MARGIN = 70
_NOTICE = (
    "Research tool - not a diagnostic device. Results must be reviewed by a qualified "
    "pathologist and must not be the sole basis of a clinical decision."
)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    source, slide, grid = report["source"], report["slide"], report["analysis"]
    model = report.get("model") or {}
    model_text = " / ".join(
        str(model[key]) for key in ("endpoint", "model", "variant") if model.get(key)
    )
    return [
        ("Slide file", str(source.get("filename", "-"))),
        (
            "Size",
            f"{slide['width']} x {slide['height']} px, {slide['levels']} level(s), "
            f"{slide['format']}",
        ),
        (
            "Resolution",
            f"{slide['mpp']:.3f} um/px ({slide['mpp_source']}); tiles at {grid['model_mpp']} um/px",
        ),
        ("Model", model_text or "-"),
        (
            "Tiling",
            f"{grid['tile_size']} px tiles, stride {grid['stride']}, "
            f"threshold {grid['threshold']:.3f}",
        ),
        ("Slide context", _context_text(grid.get("context_radius") or 0)),
        ("Analysed", report["created"].replace("T", " ")),
    ]


def _context_text(radius: int) -> str:
    if not radius:
        return "off: every tile scored alone"
    side = 2 * radius + 1
    return f"on: each tile combined with its neighbours (windows up to {side} x {side} tiles)"


def _results(report: dict[str, Any]) -> list[tuple[str, str]]:
    tiles = report["tiles"]
    region = report.get("largest_region")
    region_text = (
        f"{region['tiles']} tiles, {region['area_mm2']:.3f} mm2 at x={region['bbox']['x']}, "
        f"y={region['bbox']['y']} (max p {region['max_probability']:.2f})"
        if region
        else "none"
    )
    return [
        ("IDC-positive tissue", f"{_percent(report['idc_positive_fraction'])} of tissue"),
        ("Tissue analysed", f"{tiles['tissue']} tiles, {report['tissue_area_mm2']:.2f} mm2"),
        ("IDC-positive area", f"{tiles['idc_positive']} tiles, {report['idc_area_mm2']:.2f} mm2"),
        ("Largest IDC region", region_text),
        ("Mean IDC probability", _number(report.get("mean_probability"))),
    ]


def _table(draw: ImageDraw.ImageDraw, rows: list[tuple[str, str]], x: int, y: int) -> int:
    for label, value in rows:
        draw.text((x, y), label, fill=(90, 96, 102), font=font(17))
        draw.text((x + 260, y), value, fill=_INK, font=font(17))
        y += 27
    return y


def _fit(image: Image.Image, width: int, height: int) -> Image.Image:
    scale = min(width / image.width, height / image.height, 1.0 if image.width > 400 else 4.0)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def _explanation_row(
    page: Image.Image, draw: ImageDraw.ImageDraw, explanations: list[Image.Image], y: int
) -> None:
    """The top tiles' Grad-CAM pictures in a row, with their colour key."""
    from bcd.slides._explain import colour_key

    draw.text(
        (_MARGIN, y),
        "Where the model sees IDC in them (Grad-CAM of the IDC evidence)",
        fill=_INK,
        font=font(17),
    )
    y += 28
    for index, picture in enumerate(explanations[:8]):
        page.paste(picture.resize((100, 100)), (_MARGIN + index * 138, y))
    page.paste(colour_key(238), (_MARGIN, y + 104))


def render_page(
    report: dict[str, Any],
    heatmap: Image.Image,
    tiles: list[np.ndarray],
    comparison: Image.Image | None = None,
    explanations: list[Image.Image] | None = None,
) -> Image.Image:
    """Lay out the one-page report.

    Args:
        report: The JSON report.
        heatmap: The heatmap with its legend.
        tiles: Images of the top tiles (uint8 ``(50, 50, 3)``), most suspicious first.
        comparison: Predicted beside ground truth, when truth was given.
        explanations: The same tiles with their Grad-CAM heat blended on
            (:func:`bcd.slides._explain.explain_top_tiles`), shown under them.

    Returns:
        An A4 page (150 dpi) as an RGB image.
    """
    page = Image.new("RGB", PAGE_SIZE, "white")
    draw = ImageDraw.Draw(page)
    width = PAGE_SIZE[0] - 2 * _MARGIN
    draw.rectangle((0, 0, PAGE_SIZE[0], 110), fill=(30, 58, 95))
    draw.text((_MARGIN, 28), "IDC slide analysis report", fill="white", font=font(34))
    draw.text(
        (_MARGIN, 72),
        "bcd - invasive ductal carcinoma detection in H&E",
        fill=(220, 228, 240),
        font=font(17),
    )
    draw.rectangle(
        (_MARGIN, 128, _MARGIN + width, 178), fill=(255, 243, 205), outline=(180, 140, 20)
    )
    draw.text((_MARGIN + 12, 134), "RESEARCH USE ONLY", fill=(110, 80, 0), font=font(16))
    draw.text((_MARGIN + 12, 154), _NOTICE, fill=(110, 80, 0), font=font(13))
    y = _table(draw, _facts(report), _MARGIN, 198) + 10
    draw.line((_MARGIN, y, _MARGIN + width, y), fill=(200, 200, 200))
    y = _table(draw, _results(report), _MARGIN, y + 12) + 12
    # The Grad-CAM row takes room from the pictures above it.
    room = 60 if explanations else 0
    image_height = (520 if comparison is None else 400) - room
    picture = _fit(heatmap, width, image_height)
    page.paste(picture, (_MARGIN, y))
    y += picture.height + 14
    if comparison is not None:
        truth = report.get("ground_truth") or {}
        draw.text(
            (_MARGIN, y),
            f"Against ground truth ({truth.get('annotated_tiles', 0)} annotated tiles): "
            f"AUC {_number(truth.get('auc'))}, "
            f"balanced accuracy {_number(truth.get('balanced_accuracy'))}, "
            f"F1 {_number(truth.get('f1'))}, sensitivity {_number(truth.get('sensitivity'))}, "
            f"specificity {_number(truth.get('specificity'))}",
            fill=_INK,
            font=font(15),
        )
        y += 26
        picture = _fit(comparison, width, 300 - room // 2)
        page.paste(picture, (_MARGIN, y))
        y += picture.height + 14
    draw.text(
        (_MARGIN, y),
        "Most suspicious tiles, by each tile's own score (x, y in slide pixels)",
        fill=_INK,
        font=font(17),
    )
    y += 28
    for index, (tile, entry) in enumerate(zip(tiles[:8], report["top_tiles"][:8], strict=False)):
        x = _MARGIN + index * 138
        page.paste(Image.fromarray(tile).resize((100, 100), Image.Resampling.NEAREST), (x, y))
        draw.text(
            (x, y + 104),
            f"#{entry['rank']}  p={entry.get('tile_probability', entry['probability']):.2f}",
            fill=_INK,
            font=font(13),
        )
        draw.text((x, y + 121), f"{entry['x']}, {entry['y']}", fill=(90, 96, 102), font=font(12))
    if explanations:
        _explanation_row(page, draw, explanations, y + 142)
    lines = [
        line
        for note in report.get("notes") or []
        for line in textwrap.wrap(f"Note: {note}", width=150, subsequent_indent="  ")
    ]
    y = PAGE_SIZE[1] - 60 - 20 * len(lines)
    for line in lines:
        draw.text((_MARGIN, y), line, fill=(90, 96, 102), font=font(13))
        y += 20
    draw.text(
        (_MARGIN, PAGE_SIZE[1] - 40),
        f"Generated by bcd on {report['created'][:10]}. Research tool - not a diagnostic device.",
        fill=(120, 120, 120),
        font=font(12),
    )
    return page
