"""Tissue detection: Otsu's threshold on colour saturation, in numpy.

H&E tissue is pink and purple (saturated); glass, dust-free background and
pen-free margins are white or grey (unsaturated), so saturation separates them
better than brightness does.
"""

from __future__ import annotations

import numpy as np

#: Default bounds on the saturation threshold (0-255). Otsu finds the valley
#: between glass and tissue; the bounds keep it sane on slides that are almost
#: all tissue (no valley) or almost all glass.
MIN_THRESHOLD = 20.0
MAX_THRESHOLD = 50.0


def saturation(image: np.ndarray) -> np.ndarray:
    """HSV saturation of an RGB image, scaled 0-255.

    Args:
        image: uint8 ``(..., 3)``.

    Returns:
        float32 array of the image's shape without the channel axis.
    """
    red, green, blue = image[..., 0], image[..., 1], image[..., 2]
    # Elementwise max/min of the three planes: much faster than reducing a length-3 axis.
    high = np.maximum(np.maximum(red, green), blue)
    low = np.minimum(np.minimum(red, green), blue)
    return (
        (high - low).astype(np.float32) * np.float32(255.0) / np.maximum(high, 1).astype(np.float32)
    )


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold: the cut maximising the between-class variance.

    Args:
        values: Any array of numbers in 0-255.
        bins: Histogram bins.

    Returns:
        The threshold; values above it form the upper class. For a constant
        input the threshold is that constant.
    """
    histogram, edges = _histogram(values, bins)
    total = histogram.sum()
    if total == 0:
        return 0.0
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(histogram)
    weight_high = total - weight_low
    sum_low = np.cumsum(histogram * centres)
    mean_low = sum_low / np.maximum(weight_low, 1e-12)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1e-12)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    between[(weight_low == 0) | (weight_high == 0)] = -1.0
    best = float(between.max())
    if best < 0:
        return float(centres[int(np.argmax(histogram))])
    # With an empty gap between the classes every cut in the gap is optimal: take its middle.
    optimal = np.flatnonzero(between >= best * (1 - 1e-9))
    return float((edges[optimal[0] + 1] + edges[optimal[-1] + 1]) / 2)


def _histogram(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.histogram(values, bins, range=(0, 256))`` as float64 counts, and its edges.

    With 256 unit-wide bins and values inside [0, 256) a value's bin is its
    integer part, so ``bincount`` gives the same counts at a fraction of the cost.
    """
    edges = np.linspace(0.0, 256.0, bins + 1)
    flat = np.asarray(values).ravel()
    if bins == 256 and flat.size and flat.min() >= 0 and flat.max() < 256:
        counts = np.bincount(flat.astype(np.intp), minlength=256)
        return counts.astype(np.float64), edges
    counts, edges = np.histogram(flat, bins=bins, range=(0.0, 256.0))
    return counts.astype(np.float64), edges


def tissue_threshold(
    image: np.ndarray,
    low: float = MIN_THRESHOLD,
    high: float = MAX_THRESHOLD,
    saturation_map: np.ndarray | None = None,
) -> float:
    """The saturation threshold separating tissue from glass in ``image``.

    Args:
        image: uint8 RGB ``(h, w, 3)``, typically a slide thumbnail.
        low: Lower bound of the threshold.
        high: Upper bound of the threshold.
        saturation_map: ``saturation(image)`` when already computed.

    Returns:
        Otsu's threshold on saturation, clipped to ``[low, high]``.
    """
    values = saturation(image) if saturation_map is None else saturation_map
    return float(np.clip(otsu_threshold(values), low, high))


def tissue_mask(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Boolean mask of tissue pixels.

    Args:
        image: uint8 RGB ``(h, w, 3)``.
        threshold: Saturation threshold; ``None`` computes it with
            :func:`tissue_threshold`.

    Returns:
        bool ``(h, w)``, True where there is tissue.
    """
    if threshold is None:
        threshold = tissue_threshold(image)
    return saturation(image) > threshold
