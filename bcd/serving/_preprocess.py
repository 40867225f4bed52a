"""Image arrays → the model's normalised float32 batch, vectorised with numpy.

Size policy (the model sees exactly its input size, ``H×W`` from model.json):

- A patch smaller than the input is padded at the bottom and right with
  ``pad_value`` (white background), which is how slide-edge patches are cut:
  a patch's ``x, y`` is its top-left corner, so the missing part lies beyond
  the slide's right or bottom edge.
- A patch larger than the input is centre-cropped to it, never resized:
  resizing would change the apparent size of nuclei, and the model was
  trained at one magnification. Whole slides go through the slides route,
  which tiles them.

Stain normalisation (``input.stain_normalization`` in model.json) runs on the
uint8 batch at the input size, after the padding or cropping above and before
the per-channel scaling, as in training (:mod:`bcd.stain`).
"""

from __future__ import annotations

import numpy as np

from bcd.serving._model_spec import ModelSpec

# The 8 views of the dihedral group D4: rotation by k·90° of the image and of
# its mirror image. Applied on NCHW batches (axes 2, 3 are H, W).
_DIHEDRAL = tuple((flip, turns) for flip in (False, True) for turns in range(4))


class Preprocessor:
    """Turns decoded RGB patches into the model's input batch.

    Args:
        spec: The model's ``model.json``; gives input size, scale, mean, std, pad value.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.height = spec.height
        self.width = spec.width
        self.pad_value = spec.pad_value
        self.stain = spec.stain
        std = np.asarray(spec.std, dtype=np.float32)
        mean = np.asarray(spec.mean, dtype=np.float32)
        # (pixel / scale - mean) / std  ==  pixel * gain + offset, per channel.
        self._gain = (1.0 / (spec.scale * std)).astype(np.float32)  # (3,)
        self._offset = (-mean / std).astype(np.float32)  # (3,)

    def fit(self, image: np.ndarray) -> np.ndarray:
        """One ``H'×W'×3`` uint8 patch → ``H×W×3`` uint8 (pad or centre-crop)."""
        height, width = image.shape[:2]
        if height == self.height and width == self.width:
            return image
        top = max(0, (height - self.height) // 2)
        left = max(0, (width - self.width) // 2)
        cropped = image[top : top + self.height, left : left + self.width]
        canvas = np.full((self.height, self.width, 3), self.pad_value, dtype=np.uint8)
        canvas[: cropped.shape[0], : cropped.shape[1]] = cropped
        return canvas

    def stack(self, images: list[np.ndarray]) -> np.ndarray:
        """Patches → one ``(N, H, W, 3)`` uint8 array at the input size."""
        if len(images) == 1:
            return self.fit(images[0])[np.newaxis]  # a view: no copy for the common case
        return np.stack([self.fit(image) for image in images])

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 → ``(N, 3, H, W)`` float32, contiguous, normalised."""
        if self.stain is not None:
            pixels = self.stain(pixels)  # (N, H, W, 3) uint8, onto the reference stain
        # Transpose the uint8 pixels first (a quarter of the bytes), so the
        # float work runs over long contiguous planes rather than RGB triples.
        planes = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2))  # (N, 3, H, W) uint8
        batch = planes.astype(np.float32)
        batch *= self._gain.reshape(1, -1, 1, 1)
        batch += self._offset.reshape(1, -1, 1, 1)
        return batch

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """Patches (each ``H'×W'×3`` uint8) → ``(N, 3, H, W)`` float32 batch."""
        return self.normalise(self.stack(images))


def dihedral_views(batch: np.ndarray, axes: tuple[int, int] = (2, 3)) -> np.ndarray:
    """The 8 dihedral views of a batch, view-major: ``(8N, …)``.

    Args:
        batch: ``(N, 3, H, W)`` by default; pass ``axes=(1, 2)`` for ``(N, H, W, 3)``.
        axes: The height and width axes.

    Non-square inputs get the 4 views that keep the shape (identity, both
    mirrors and the half turn), so the result holds ``4N`` images. Views are
    exact permutations of pixels, so taking them before or after the per-channel
    normalisation gives the same numbers.
    """
    square = batch.shape[axes[0]] == batch.shape[axes[1]]
    views = []
    for flip, turns in _DIHEDRAL:
        if not square and turns % 2:
            continue
        view = np.flip(batch, axis=axes[1]) if flip else batch
        views.append(np.rot90(view, k=turns, axes=axes))
    return np.ascontiguousarray(np.concatenate(views))


def average_views(probabilities: np.ndarray, count: int) -> np.ndarray:
    """Mean over view-major blocks: ``(V·N, C)`` → ``(N, C)``."""
    return probabilities.reshape(count, -1, probabilities.shape[-1]).mean(axis=0)
