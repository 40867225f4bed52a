"""Knowledge distillation: train a network on a teacher's soft targets plus the labels.

The teacher is any bcd model folder (``model.onnx`` + ``model.json``), scored
with ONNX Runtime — whatever network made it, no torch code of it is needed.
Its logits for every training patch are computed once, before the first
epoch, and kept in memory (2 floats a patch); each step then looks up its
batch's rows. The loss (Hinton et al. 2015) is::

    (1 − α) · CE(student, labels) + α · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

The T² keeps the soft term's gradients on the scale of the hard one.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bcd.errors import InvalidInputError
from bcd.stain import StainNormalizer

logger = logging.getLogger(__name__)

_BATCH = 512


@dataclass(frozen=True)
class Distillation:
    """What a training step needs to distil.

    Attributes:
        teacher_logits: (N, C) the teacher's logits for every training patch,
            indexed like the train channel.
        alpha: Weight of the soft-target term, in [0, 1].
        temperature: Softening temperature T > 0.
    """

    teacher_logits: torch.Tensor
    alpha: float
    temperature: float

    def loss(
        self, student_logits: torch.Tensor, hard_loss: torch.Tensor, teacher: torch.Tensor
    ) -> torch.Tensor:
        """Blend ``hard_loss`` with the soft term for (B, C) student and teacher logits."""
        soft = soft_target_loss(student_logits, teacher, self.temperature)
        return (1.0 - self.alpha) * hard_loss + self.alpha * soft


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T² · KL(softmax(teacher / T) ‖ softmax(student / T)), averaged over the batch.

    Args:
        student_logits: (B, C).
        teacher_logits: (B, C), or (B, C) blended probabilities' logits.
        temperature: T > 0.

    Returns:
        A scalar tensor.
    """
    targets = torch.softmax(teacher_logits / temperature, dim=1)  # (B, C)
    log_student = torch.log_softmax(student_logits / temperature, dim=1)  # (B, C)
    divergence = nn.functional.kl_div(log_student, targets, reduction="batchmean")
    return divergence * temperature**2


def _read_teacher(folder: Path) -> tuple[Path, dict[str, Any]]:
    description_path, onnx_path = folder / "model.json", folder / "model.onnx"
    if not description_path.is_file() or not onnx_path.is_file():
        raise InvalidInputError(
            f"teacher {str(folder)!r} is not a bcd model folder (it needs model.onnx and "
            "model.json); give a training job's model folder or a training job name"
        )
    try:
        description = json.loads(description_path.read_text())
        shape = [int(size) for size in description["input"]["shape"]]
        for value in description["input"]["mean"] + description["input"]["std"]:
            float(value)
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidInputError(
            f"teacher {str(folder)!r} has an unreadable model.json: {error}"
        ) from None
    if len(shape) != 3 or shape[0] != 3:
        raise InvalidInputError(f"teacher {str(folder)!r} takes input {shape}, not [3, H, W]")
    return onnx_path, description


def score_teacher(folder: str | Path, images: np.ndarray, threads: int = 0) -> np.ndarray:
    """The teacher's logits for ``images``, computed with ONNX Runtime.

    Args:
        folder: A bcd model folder.
        images: (N, H, W, 3) uint8 patches (a memory map is fine), the size the
            teacher takes.
        threads: Intra-op threads; 0 lets ONNX Runtime choose.

    Returns:
        (N, C) float32 logits.

    Raises:
        InvalidInputError: If the folder is not a model, or its input size
            differs from the patches'.
    """
    import onnxruntime

    onnx_path, description = _read_teacher(Path(folder))
    spec = description["input"]
    if list(images.shape[1:3]) != spec["shape"][1:]:
        raise InvalidInputError(
            f"teacher {str(folder)!r} takes {spec['shape'][1]}x{spec['shape'][2]} patches but "
            f"the train channel holds {images.shape[1]}x{images.shape[2]}"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    input_name = session.get_inputs()[0].name
    scale = float(spec.get("scale", 255.0))
    mean = np.asarray(spec["mean"], np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec["std"], np.float32).reshape(1, 3, 1, 1)
    stain = StainNormalizer.from_json(spec.get("stain_normalization"))
    started = time.perf_counter()
    chunks = []
    for start in range(0, len(images), _BATCH):
        patches = np.asarray(images[start : start + _BATCH])  # (B, H, W, 3)
        if stain is not None:
            patches = stain(patches)  # as serving does, before the per-channel scaling
        batch = patches.transpose(0, 3, 1, 2)  # (B, 3, H, W)
        inputs = ((batch.astype(np.float32) / scale - mean) / std).astype(np.float32)
        chunks.append(session.run(None, {input_name: inputs})[0].astype(np.float32))
    logits = np.concatenate(chunks) if chunks else np.zeros((0, 2), np.float32)
    logger.info(
        "scored %d training patches with the teacher in %.1f s",
        len(images),
        time.perf_counter() - started,
    )
    return logits
