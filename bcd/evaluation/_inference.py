"""Predictions through the serving runtime (ONNX Runtime), as a deployed model gives them.

The runtime returns ``softmax(logits / T + [0, b])`` with the temperature ``T``
and logit bias ``b`` of ``model.json``. For two classes that is
``sigmoid(m / T + b)`` with the margin ``m = z_IDC - z_noIDC``, so
``m = T * (log p_IDC - log p_noIDC - b)`` recovers the
margin exactly (the runtime's softmax is float64). Keeping margins lets
evaluation refit the temperature and recompute probabilities for any ``T``
without running the model again. With test-time augmentation each of the 8
dihedral views is run on its own and the view probabilities are averaged,
exactly as the runtime's TTA does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bcd.errors import require

logger = logging.getLogger(__name__)

# The dihedral group D4 in the runtime's order: mirror or not, then k quarter turns.
DIHEDRAL_VIEWS = tuple((flip, turns) for flip in (False, True) for turns in range(4))


def dihedral_view(images: np.ndarray, flip: bool, turns: int) -> np.ndarray:
    """One dihedral view of ``(N, H, W, 3)`` patches: mirror left-right, then rotate.

    Args:
        images: (N, H, W, 3) uint8 patches.
        flip: Mirror along the width axis first.
        turns: Quarter turns (counter-clockwise) in the image plane.

    Returns:
        (N, H, W, 3) view (W, H swapped for odd turns of non-square patches).
    """
    view = images[:, :, ::-1] if flip else images
    return np.ascontiguousarray(np.rot90(view, k=turns, axes=(1, 2)))


def probabilities_from_margins(
    margins: np.ndarray, temperature: float, bias: float = 0.0
) -> np.ndarray:
    """P(IDC) from margins: ``sigmoid(m / T + b)`` averaged over the views.

    Args:
        margins: (V, N) margins of V views (V = 1 without TTA).
        temperature: T > 0.
        bias: The logit bias b (Platt scaling); 0 for temperature scaling alone.

    Returns:
        (N,) float64 probabilities.
    """
    scaled = np.asarray(margins, dtype=np.float64) / temperature + bias
    # exp of a negative argument only, so large margins never overflow.
    positive = scaled >= 0
    exp_neg = np.exp(-np.abs(scaled))
    sigmoid = np.where(positive, 1 / (1 + exp_neg), exp_neg / (1 + exp_neg))
    return sigmoid.mean(axis=0)


class RuntimeScorer:
    """Scores patches with a model folder through :class:`bcd.serving.ModelRuntime`.

    Args:
        model_dir: Local folder with ``model.json`` and ``model.onnx``.
        threads: ONNX Runtime intra-op threads (default: all available cores).
        batch_size: Patches per inference call.

    Raises:
        DependencyMissingError: onnxruntime is not installed.
        NotFoundError: The folder lacks ``model.json`` or the ONNX file.
        InvalidInputError: They are invalid.
    """

    def __init__(self, model_dir: Path, threads: int | None = None, batch_size: int = 256) -> None:
        require("onnxruntime", "serve")
        from bcd.serving import ModelRuntime

        self.batch_size = batch_size
        self.runtime: Any = ModelRuntime(
            model_dir,
            replicas=1,
            threads=threads,
            max_batch_size=batch_size,
            max_wait_ms=0.0,
            name="evaluate",
        )
        self.spec = self.runtime.spec

    @property
    def temperature(self) -> float:
        """The temperature in the model's ``model.json``."""
        return float(self.spec.temperature)

    @property
    def logit_bias(self) -> float:
        """The logit bias in the model's ``model.json`` (0 when absent)."""
        return float(self.spec.logit_bias)

    @property
    def decision_threshold(self) -> float:
        """The decision threshold in the model's ``model.json`` (0.5 when absent)."""
        return float(self.spec.decision_threshold)

    @property
    def default_tta(self) -> bool:
        """Whether the model turns test-time augmentation on by default."""
        return bool(self.spec.tta)

    def fit_size(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Pad or crop patches to the model's input size, as serving does.

        Returns:
            (N, H, W, 3) uint8.
        """
        if isinstance(images, np.ndarray) and images.shape[1:] == (
            self.spec.height,
            self.spec.width,
            3,
        ):
            return np.asarray(images, dtype=np.uint8)
        return self.runtime.preprocess.stack(list(images))  # type: ignore[no-any-return]

    def margins(
        self,
        images: Sequence[np.ndarray] | np.ndarray,
        tta: bool,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """IDC margins ``z_IDC - z_noIDC`` of every patch, per view.

        Args:
            images: N patches, ``H×W×3`` uint8 (a memory map is read chunk by chunk).
            tta: Run the 8 dihedral views (else the patches as they are).
            progress: Called with (patches done, total) after each chunk.

        Returns:
            (V, N) float64 margins; V is 8 with TTA, else 1.
        """
        views = DIHEDRAL_VIEWS if tta else DIHEDRAL_VIEWS[:1]
        total = len(images)
        chunk = max(self.batch_size * 4, 1024)
        margins = np.empty((len(views), total), dtype=np.float64)
        for start in range(0, total, chunk):
            pixels = self.fit_size(images[start : start + chunk])  # (n, H, W, 3)
            for index, (flip, turns) in enumerate(views):
                view = dihedral_view(pixels, flip, turns) if index else pixels
                probabilities = self.runtime.predict(view, tta=False)  # (n, 2) float64
                clipped = np.clip(probabilities, 1e-300, 1.0)
                margins[index, start : start + len(pixels)] = self.temperature * (
                    np.log(clipped[:, 1]) - np.log(clipped[:, 0]) - self.logit_bias
                )
            if progress is not None:
                progress(min(start + chunk, total), total)
        return margins

    def close(self) -> None:
        """Release the ONNX Runtime session."""
        self.runtime.close()
