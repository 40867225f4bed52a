"""Connected regions of IDC-positive tiles, the most suspicious tiles, regions as GeoJSON."""

from __future__ import annotations

import json
from typing import Any

import numpy as np


def label_regions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label 8-connected regions of True cells.

    Works on runs of consecutive cells per row joined by union-find, so the
    cost grows with the number of runs, not of cells.

    Args:
        mask: bool ``(rows, cols)``.

    Returns:
        ``(labels, count)``: int32 ``(rows, cols)`` with 0 for False cells and
        1..count for regions, and the number of regions.
    """
    rows, _ = mask.shape
    runs: list[tuple[int, int, int]] = []  # (row, start, end) with end exclusive
    row_runs: list[list[int]] = []
    for row in range(rows):
        line = np.concatenate(([False], mask[row], [False])).astype(np.int8)
        edges = np.flatnonzero(np.diff(line))
        ids = []
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            ids.append(len(runs))
            runs.append((row, int(start), int(end)))
        row_runs.append(ids)
    parent = list(range(len(runs)))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for row in range(1, rows):
        above, here = row_runs[row - 1], row_runs[row]
        i = j = 0
        while i < len(above) and j < len(here):
            _, a_start, a_end = runs[above[i]]
            _, b_start, b_end = runs[here[j]]
            # Runs touch (diagonals included) when they overlap after widening by one.
            if a_start <= b_end and b_start <= a_end:
                root_a, root_b = find(above[i]), find(here[j])
                if root_a != root_b:
                    parent[root_b] = root_a
            if a_end < b_end:
                i += 1
            else:
                j += 1
    labels = np.zeros(mask.shape, dtype=np.int32)
    numbering: dict[int, int] = {}
    for index, (row, start, end) in enumerate(runs):
        root = find(index)
        if root not in numbering:
            numbering[root] = len(numbering) + 1
        labels[row, start:end] = numbering[root]
    return labels, len(numbering)


def largest_region(mask: np.ndarray) -> np.ndarray | None:
    """The biggest 8-connected region of True cells.

    Args:
        mask: bool ``(rows, cols)``.

    Returns:
        bool mask of that region, or ``None`` when ``mask`` has no True cell.
        Ties go to the region met first in row-major order.
    """
    labels, count = label_regions(mask)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def top_tiles(probabilities: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """The ``k`` tiles with the highest IDC probability.

    Args:
        probabilities: float ``(rows, cols)``, NaN where no tile was analysed.
        k: How many.

    Returns:
        ``(row, col, probability)`` triples, most suspicious first; ties in
        row-major order.
    """
    flat = np.nan_to_num(probabilities.ravel(), nan=-1.0)
    analysed = int(np.count_nonzero(flat >= 0))
    k = min(k, analysed)
    if k <= 0:
        return []
    order = np.argsort(-flat, kind="stable")[:k]
    cols = probabilities.shape[1]
    return [(int(index // cols), int(index % cols), float(flat[index])) for index in order]


#: QuPath's colour for the IDC class of exported regions (the heatmap's red).
IDC_COLOUR = (215, 25, 28)


def regions_geojson(
    probabilities: np.ndarray,
    threshold: float,
    cell: float,
    slide_size: tuple[int, int],
    mpp: float,
) -> dict[str, Any]:
    """IDC regions as a QuPath-compatible GeoJSON ``FeatureCollection``.

    Each 8-connected region of tiles at or above ``threshold`` becomes one
    feature: the union of its grid cells, a ``Polygon`` (holes included) or a
    ``MultiPolygon`` when parts touch only at corners, in level-0 pixel
    coordinates (x right, y down, as QuPath places objects), clipped to the slide.

    Args:
        probabilities: float ``(rows, cols)``, NaN where no tile was scored.
        threshold: IDC probability at which a tile is positive.
        cell: Edge of a grid cell in level-0 pixels.
        slide_size: ``(width, height)`` of level 0.
        mpp: Microns per level-0 pixel (for the areas).

    Returns:
        The collection; each feature's ``properties`` hold ``objectType``
        ``"annotation"``, ``classification`` ``{"name": "IDC", "color": [r, g, b]}``
        and ``measurements`` (tiles, mean and max probability, area in µm² and mm²).
    """
    import shapely

    positive = np.nan_to_num(probabilities, nan=0.0) >= threshold
    positive &= ~np.isnan(probabilities)
    labels, count = label_regions(positive)
    flat = labels.ravel()
    cells = np.flatnonzero(flat)
    cells = cells[np.argsort(flat[cells], kind="stable")]
    starts = np.searchsorted(flat[cells], np.arange(1, count + 2))
    bounds = shapely.box(0, 0, *slide_size)
    cols_total = probabilities.shape[1]
    features = []
    for region in range(count):
        members = cells[starts[region] : starts[region + 1]]
        rows, cols = members // cols_total, members % cols_total
        boxes = shapely.box(cols * cell, rows * cell, (cols + 1) * cell, (rows + 1) * cell)
        # Simplifying by 0 only drops the vertices between collinear cell edges.
        shape = shapely.simplify(shapely.intersection(shapely.union_all(boxes), bounds), 0)
        values = probabilities[rows, cols]
        area_um2 = float(shape.area) * mpp * mpp
        features.append(
            {
                "type": "Feature",
                "geometry": json.loads(shapely.to_geojson(shapely.set_precision(shape, 0.01))),
                "properties": {
                    "objectType": "annotation",
                    "name": f"IDC region {region + 1}",
                    "classification": {"name": "IDC", "color": list(IDC_COLOUR)},
                    "isLocked": False,
                    "measurements": {
                        "Tiles": len(members),
                        "Mean IDC probability": round(float(values.mean()), 4),
                        "Max IDC probability": round(float(values.max()), 4),
                        "Area µm^2": round(area_um2, 1),
                        "Area mm^2": round(area_um2 / 1e6, 6),
                    },
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}
