"""H&E stain normalisation (Reinhard, Macenko) through torchstain's numpy backend.

One :class:`StainNormalizer` maps uint8 RGB patches onto a reference stain.
Training fits the reference on its train channel and writes it into
``model.json`` (``input.stain_normalization``); serving, whole-slide analysis
and distillation rebuild the same normaliser from there, so every path applies
exactly the same transform with no training data at hand. This module needs
numpy and torchstain only (no torch), so the ``serve`` extra can run it.

- ``reinhard`` (Reinhard et al. 2001): each patch's CIELAB channels are
  standardised and given the reference's mean and standard deviation.
  torchstain's ``NumpyReinhardNormalizer`` normalises one image at a time from
  that image's own statistics; here its colour conversions (``rgb2lab``,
  ``lab2rgb``, which work on any ``(..., 3)`` array) run over the whole batch
  with per-patch statistics, which gives the same bytes as calling it per patch.
- ``macenko`` (Macenko et al. 2009): each patch's H and E stain vectors and
  concentrations are estimated and re-mixed with the reference's;
  torchstain's ``NumpyMacenkoNormalizer`` is called per patch (it has no batch API).

The reference is fitted with torchstain's own ``fit`` on one image made of
:data:`REFERENCE_PATCHES` training patches side by side, drawn with a fixed
seed among those with at least :data:`REFERENCE_MIN_TISSUE` tissue, so a given
train channel always yields the same reference.

Pass-through rule: a patch comes back unchanged when less than
``min_tissue_fraction`` of its pixels are tissue (total optical density
``−Σ ln((I + 1) / 256)`` of at least ``tissue_optical_density``; the default
0.3 is about a grey of 232), when one of its CIELAB channels has no spread
(Reinhard), when fewer than ``min_stain_pixels`` pixels are dense enough for
the stain estimate (Macenko), or when the estimate fails numerically (a
singular or empty covariance, a zero concentration). It never raises for a patch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bcd.errors import DependencyMissingError, InvalidInputError

logger = logging.getLogger(__name__)

METHODS = ("none", "reinhard", "macenko")
#: Training patches tiled into the mosaic the reference is fitted on.
REFERENCE_PATCHES = 64
#: Candidates drawn (with :data:`REFERENCE_SEED`) to choose them from.
REFERENCE_CANDIDATES = 2048
REFERENCE_SEED = 0
#: Tissue share a patch needs to be chosen for the reference.
REFERENCE_MIN_TISSUE = 0.75
MIN_TISSUE_FRACTION = 0.25
TISSUE_OPTICAL_DENSITY = 0.3
MIN_STAIN_PIXELS = 64
#: torchstain's Macenko defaults: light intensity and the optical density a
#: pixel needs in every channel to enter the stain estimate.
MACENKO_IO = 240
MACENKO_BETA = 0.15
#: Macenko: a second covariance eigenvalue below this (a flat patch) passes through.
MIN_STAIN_VARIANCE = 1e-6
#: A CIELAB channel with less spread than this (Reinhard) leaves the patch unchanged.
MIN_LAB_STD = 1e-2
_CHUNK = 512

_TARGET_FIELDS: dict[str, dict[str, tuple[int, ...]]] = {
    "reinhard": {"means": (3,), "stds": (3,)},
    "macenko": {"stain_matrix": (3, 2), "max_concentrations": (2,)},
}


def _torchstain_normalizers() -> Any:
    try:
        from torchstain.numpy import normalizers
    except ImportError as error:
        raise DependencyMissingError(
            "stain normalisation needs the torchstain package; install bcd[serve] or "
            "bcd[train] (pip install torchstain)"
        ) from error
    return normalizers


def tissue_fraction(images: np.ndarray, optical_density: float = TISSUE_OPTICAL_DENSITY) -> Any:
    """Share of tissue pixels in each patch.

    Args:
        images: (N, H, W, 3) uint8.
        optical_density: A pixel is tissue when its total optical density
            ``−Σ_c ln((I_c + 1) / 256)`` reaches this.

    Returns:
        (N,) float64 in [0, 1].
    """
    # Optical density per intensity value: a 256-entry table instead of a log per pixel.
    table = -np.log((np.arange(256, dtype=np.float32) + 1.0) / 256.0)
    density = table[images].sum(axis=-1)  # (N, H, W)
    return (density >= optical_density).mean(axis=(1, 2))


def reference_patches(
    images: np.ndarray,
    count: int = REFERENCE_PATCHES,
    seed: int = REFERENCE_SEED,
    min_tissue: float = REFERENCE_MIN_TISSUE,
) -> np.ndarray:
    """The training patches the reference stain is fitted on.

    Up to :data:`REFERENCE_CANDIDATES` patches are drawn with ``seed``; the first
    ``count`` of them (in draw order) with at least ``min_tissue`` tissue are
    kept, topped up with the most tissue-rich remaining candidates.

    Args:
        images: (N, H, W, 3) uint8, e.g. a train channel's memory map.
        count: Patches wanted.
        seed: Seed of the draw.
        min_tissue: Tissue share preferred.

    Returns:
        (M, H, W, 3) uint8, M = min(count, N).

    Raises:
        InvalidInputError: If no candidate holds any tissue.
    """
    draw = np.random.default_rng(seed).permutation(len(images))[:REFERENCE_CANDIDATES]
    candidates = np.asarray(images[np.sort(draw)])[np.argsort(np.argsort(draw))]
    fractions = tissue_fraction(candidates)
    rich = np.flatnonzero(fractions >= min_tissue)[:count]
    if len(rich) < count:
        by_tissue = np.argsort(-fractions, kind="stable")
        rest = by_tissue[~np.isin(by_tissue, rich)]
        rich = np.concatenate([rich, rest[: count - len(rich)]])
    if not fractions[rich].max(initial=0.0) > 0:
        raise InvalidInputError(
            "cannot fit a stain reference: the train channel's patches hold no tissue; "
            "use stain_normalization=none"
        )
    return candidates[rich]


def mosaic(patches: np.ndarray) -> np.ndarray:
    """(M, H, W, 3) patches side by side: one (H, M·W, 3) image for torchstain's ``fit``."""
    return np.ascontiguousarray(np.concatenate(list(patches), axis=1))


@dataclass(frozen=True)
class StainNormalizer:
    """A fitted stain normalisation, applied to batches of uint8 patches.

    Attributes:
        method: ``reinhard`` or ``macenko``.
        target: The reference: ``means``/``stds`` (CIELAB, torchstain's scale)
            for Reinhard, ``stain_matrix`` (3×2, H and E columns in optical
            density) and ``max_concentrations`` (2) for Macenko.
        min_tissue_fraction: Patches with less tissue pass through.
        tissue_optical_density: What counts as a tissue pixel.
        min_stain_pixels: Macenko: dense pixels needed for the stain estimate.
    """

    method: str
    target: Mapping[str, tuple[float, ...]]
    min_tissue_fraction: float = MIN_TISSUE_FRACTION
    tissue_optical_density: float = TISSUE_OPTICAL_DENSITY
    min_stain_pixels: int = MIN_STAIN_PIXELS

    @classmethod
    def fit(cls, method: str, images: np.ndarray, seed: int = REFERENCE_SEED) -> StainNormalizer:
        """Fit the reference stain on training patches with torchstain's ``fit``.

        Args:
            method: ``reinhard`` or ``macenko``.
            images: (N, H, W, 3) uint8 training patches.
            seed: Seed of the reference patch draw (:func:`reference_patches`).

        Returns:
            The fitted normaliser.

        Raises:
            InvalidInputError: For an unknown method or patches with no tissue.
            DependencyMissingError: torchstain is not installed.
        """
        if method not in _TARGET_FIELDS:
            raise InvalidInputError(
                f"unknown stain normalisation {method!r}; valid: {', '.join(_TARGET_FIELDS)}"
            )
        patches = reference_patches(images, seed=seed)
        target_image = mosaic(patches)
        normalizers = _torchstain_normalizers()
        target: dict[str, tuple[float, ...]]
        if method == "reinhard":
            reinhard = normalizers.NumpyReinhardNormalizer()
            reinhard.fit(target_image)
            target = {
                "means": _floats(reinhard.target_means),
                "stds": _floats(reinhard.target_stds),
            }
        else:
            macenko = normalizers.NumpyMacenkoNormalizer()
            with np.errstate(all="ignore"):
                macenko.fit(target_image)
            target = {
                "stain_matrix": _floats(macenko.HERef),
                "max_concentrations": _floats(macenko.maxCRef),
            }
        normalizer = cls(method, target)
        normalizer._check()
        logger.info("fitted the %s stain reference on %d patches", method, len(patches))
        return normalizer

    @classmethod
    def from_json(cls, document: Any, require_library: bool = True) -> StainNormalizer | None:
        """Rebuild from ``model.json``'s ``input.stain_normalization`` (None: off).

        Args:
            document: The block, or ``None`` when the model has none.
            require_library: Also check that torchstain is importable (the
                registry checks the block's shape only).

        Raises:
            InvalidInputError: For a malformed block; the message names the field.
            DependencyMissingError: torchstain is not installed (so a model that
                needs it fails when it is loaded, not at its first request).
        """
        if document is None:
            return None
        if not isinstance(document, dict) or document.get("method") not in METHODS:
            raise InvalidInputError(
                "model.json input.stain_normalization must be an object whose method is one "
                f"of {', '.join(METHODS)}; got {document!r}"
            )
        method = document["method"]
        if method == "none":
            return None
        target = document.get("target")
        if not isinstance(target, dict):
            raise InvalidInputError("model.json input.stain_normalization has no 'target'")
        try:
            values = {name: _floats(target[name]) for name in _TARGET_FIELDS[method]}
            normalizer = cls(
                method,
                values,
                min_tissue_fraction=float(document.get("min_tissue_fraction", MIN_TISSUE_FRACTION)),
                tissue_optical_density=float(
                    document.get("tissue_optical_density", TISSUE_OPTICAL_DENSITY)
                ),
                min_stain_pixels=int(document.get("min_stain_pixels", MIN_STAIN_PIXELS)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise InvalidInputError(
                f"model.json input.stain_normalization.target is malformed: {error!r}"
            ) from None
        normalizer._check()
        if require_library:
            _torchstain_normalizers()
        return normalizer

    def to_json(self) -> dict[str, Any]:
        """The ``model.json`` block (``input.stain_normalization``)."""
        return {
            "method": self.method,
            "library": "torchstain (numpy backend)",
            "target": {name: list(values) for name, values in self.target.items()},
            "min_tissue_fraction": self.min_tissue_fraction,
            "tissue_optical_density": self.tissue_optical_density,
            "min_stain_pixels": self.min_stain_pixels,
            "reference": {
                "patches": REFERENCE_PATCHES,
                "seed": REFERENCE_SEED,
                "min_tissue": REFERENCE_MIN_TISSUE,
            },
        }

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Normalise a batch; patches the rule excludes come back unchanged.

        Args:
            images: (N, H, W, 3) uint8 (a memory map is read chunk by chunk).

        Returns:
            A new (N, H, W, 3) uint8 array.
        """
        result = np.empty(images.shape, dtype=np.uint8)
        for start in range(0, len(images), _CHUNK):
            chunk = np.asarray(images[start : start + _CHUNK])
            out = chunk.copy()
            selected = np.flatnonzero(
                tissue_fraction(chunk, self.tissue_optical_density) >= self.min_tissue_fraction
            )
            if len(selected):
                if self.method == "reinhard":
                    out[selected] = self._reinhard(chunk[selected])
                else:
                    out[selected] = self._macenko(chunk[selected])
            result[start : start + len(chunk)] = out
        return result

    def _reinhard(self, images: np.ndarray) -> np.ndarray:
        """torchstain's Reinhard ``normalize``, per patch, over a whole batch."""
        from torchstain.numpy.utils import lab2rgb, lab_merge, lab_split, rgb2lab

        with np.errstate(all="ignore"):
            channels = lab_split(rgb2lab(images.astype(np.float32) / 255))  # 3 × (N, H, W)
            means = [channel.mean(axis=(1, 2), keepdims=True) for channel in channels]
            stds = [channel.std(axis=(1, 2), keepdims=True) for channel in channels]
            mapped = [
                (channel - mean) / std * target_std + target_mean
                for channel, mean, std, target_mean, target_std in zip(
                    channels, means, stds, self.target["means"], self.target["stds"], strict=True
                )
            ]
            rgb = (lab2rgb(lab_merge(*mapped)) * 255).astype(np.uint8)  # (N, H, W, 3)
        flat = np.concatenate(stds, axis=-1).reshape(len(images), 3)  # (N, 3)
        flat_patches = ~(flat >= MIN_LAB_STD).all(axis=1)
        rgb[flat_patches] = images[flat_patches]
        return rgb

    def _macenko(self, images: np.ndarray) -> np.ndarray:
        """torchstain's Macenko ``normalize`` per patch; degenerate patches pass through."""
        macenko = _torchstain_normalizers().NumpyMacenkoNormalizer()
        macenko.HERef = np.asarray(self.target["stain_matrix"], dtype=np.float64).reshape(3, 2)
        macenko.maxCRef = np.asarray(self.target["max_concentrations"], dtype=np.float64)
        out = images.copy()
        for index in np.flatnonzero(self._stain_estimable(images)):
            try:
                with np.errstate(divide="raise", invalid="raise", over="ignore", under="ignore"):
                    out[index] = macenko.normalize(
                        images[index], Io=MACENKO_IO, beta=MACENKO_BETA, stains=False
                    )[0]
            except (FloatingPointError, np.linalg.LinAlgError, ValueError, IndexError):
                continue
        return out

    def _stain_estimable(self, images: np.ndarray) -> Any:
        """(N,) bool: enough dense pixels, and their optical densities span a plane.

        Macenko takes the pixels with optical density >= beta in every channel
        and projects them on the plane of their covariance's two main axes; a
        second eigenvalue of (nearly) zero leaves that plane undefined.
        """
        count = len(images)
        density = -np.log((images.reshape(count, -1, 3).astype(np.float64) + 1) / MACENKO_IO)
        dense = np.all(density >= MACENKO_BETA, axis=-1)  # (N, P)
        pixels = dense.sum(axis=1)  # (N,)
        weights = dense[..., None]  # (N, P, 1)
        mean = (density * weights).sum(axis=1) / np.maximum(pixels, 1)[:, None]  # (N, 3)
        centred = (density - mean[:, None]) * weights  # (N, P, 3)
        covariance = centred.transpose(0, 2, 1) @ centred  # (N, 3, 3)
        covariance /= np.maximum(pixels - 1, 1)[:, None, None]
        eigenvalues = np.linalg.eigvalsh(covariance)  # (N, 3), ascending
        return (pixels >= self.min_stain_pixels) & (eigenvalues[:, 1] > MIN_STAIN_VARIANCE)

    def _check(self) -> None:
        for name, shape in _TARGET_FIELDS[self.method].items():
            values = self.target.get(name, ())
            if len(values) != math.prod(shape) or not all(math.isfinite(v) for v in values):
                raise InvalidInputError(
                    f"stain normalisation target {name!r} needs {math.prod(shape)} finite "
                    f"numbers, got {values!r}"
                )
        if self.method == "reinhard" and min(self.target["stds"]) <= 0:
            raise InvalidInputError("stain normalisation target stds must be > 0")
        if self.method == "macenko" and min(self.target["max_concentrations"]) <= 0:
            raise InvalidInputError("stain normalisation max_concentrations must be > 0")


def _floats(values: Any) -> tuple[float, ...]:
    return tuple(float(value) for value in np.asarray(values, dtype=np.float64).ravel())
