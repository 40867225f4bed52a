"""Connected regions of IDC-positive tiles and the most suspicious tiles."""

from __future__ import annotations

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
