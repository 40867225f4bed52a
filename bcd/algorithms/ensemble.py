"""Ensembles of trained built-in models, served as one ONNX graph.

Two networks that make different mistakes score better together than either
alone. :class:`EnsembleNet` runs every member on the same 50×50 patch and
averages their *standardised* IDC margins: each member's margin
``m = z_IDC - z_noIDC`` is centred and scaled by its mean and standard
deviation on a validation split, so a member with larger logits does not
outvote the others. Each member keeps its own input normalisation: the graph
takes the first member's normalised input and re-normalises it per member with
one per-channel affine map, so serving preprocesses once.

The ensemble's output is the pair of logits ``(-m/2, m/2)`` whose margin is
``m = c̄ + s̄·z``: the weighted mean standardised margin ``z`` brought back to
the members' mean centre ``c̄`` and scale ``s̄``, so its logits are as large as
one member's (which matters where raw logits are used, such as a teacher's soft
targets). Calibrate it like any model (``bcd evaluate DIR --dataset NAME
--calibrate``).

A model folder written by :func:`write_ensemble` holds ``model.onnx``,
``model.json`` (``"algorithm": "ensemble"``, each member's algorithm,
hyperparameters and input normalisation under ``"ensemble"``) and
``model.pt`` (the state dict of the whole :class:`EnsembleNet`), so
:func:`bcd.algorithms.load_model` rebuilds it for Grad-CAM.

Example:
    >>> description = write_ensemble(
    ...     [Path("deep-model"), Path("lite0-model")], Path("ensemble"), validation_images
    ... )
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bcd
from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

ENSEMBLE = "ensemble"
_MIN_SCALE = 1e-6


class EnsembleNet(nn.Module):
    """Weighted mean of members' standardised IDC margins, as two logits.

    Args:
        members: Networks returning ``(N, 2)`` logits from their own normalised input.
        gains: ``(M, 3)`` per-member, per-channel factors from the ensemble's
            normalised input to the member's.
        offsets: ``(M, 3)`` per-member, per-channel offsets, likewise.
        centres: ``(M,)`` each member's mean validation margin.
        scales: ``(M,)`` each member's validation margin standard deviation.
        weights: ``(M,)`` member weights; they are normalised to sum to 1.
        output_centre: Added to the combined standardised margin (default 0).
        output_scale: Multiplies it before that (default 1).

    Raises:
        InvalidInputError: If the shapes disagree, there are no members, or a
            scale or weight is not positive.
    """

    gains: torch.Tensor
    offsets: torch.Tensor
    centres: torch.Tensor
    scales: torch.Tensor
    weights: torch.Tensor
    output: torch.Tensor

    def __init__(
        self,
        members: Sequence[nn.Module],
        gains: Sequence[Sequence[float]],
        offsets: Sequence[Sequence[float]],
        centres: Sequence[float],
        scales: Sequence[float],
        weights: Sequence[float] | None = None,
        output_centre: float = 0.0,
        output_scale: float = 1.0,
    ) -> None:
        super().__init__()
        count = len(members)
        weights = [1.0] * count if weights is None else list(weights)
        shapes = (len(gains), len(offsets), len(centres), len(scales), len(weights))
        if count == 0 or any(size != count for size in shapes):
            raise InvalidInputError(
                f"an ensemble needs one gain, offset, centre, scale and weight per member; "
                f"got {count} members and {shapes}"
            )
        if min(scales) <= 0 or min(weights) <= 0 or output_scale <= 0:
            raise InvalidInputError("ensemble scales and weights must be positive")
        self.members = nn.ModuleList(members)
        total = float(sum(weights))
        self.register_buffer(
            "gains", torch.tensor(gains, dtype=torch.float32).reshape(count, 1, 3, 1, 1)
        )
        self.register_buffer(
            "offsets", torch.tensor(offsets, dtype=torch.float32).reshape(count, 1, 3, 1, 1)
        )
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32))
        self.register_buffer("scales", torch.tensor(scales, dtype=torch.float32))
        self.register_buffer(
            "weights", torch.tensor([w / total for w in weights], dtype=torch.float32)
        )
        self.register_buffer("output", torch.tensor([output_centre, output_scale]).float())

    def member_margins(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Each member's raw IDC margin, ``(N,)`` each."""
        margins = []
        for index, member in enumerate(self.members):
            logits = member(images * self.gains[index] + self.offsets[index])  # (N, 2)
            margins.append(logits[:, 1] - logits[:, 0])
        return margins

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images → (N, 2) logits with margin ``c̄ + s̄·z``."""
        combined = torch.zeros(images.shape[0], dtype=images.dtype, device=images.device)
        for index, margin in enumerate(self.member_margins(images)):
            standardised = (margin - self.centres[index]) / self.scales[index]
            combined = combined + self.weights[index] * standardised
        half = (self.output[0] + self.output[1] * combined) / 2
        return torch.stack([-half, half], dim=1)


def input_affine(
    target: Mapping[str, Any], member: Mapping[str, Any]
) -> tuple[list[float], list[float]]:
    """Per-channel gain and offset from ``target``'s normalised input to ``member``'s.

    Both are ``model.json`` ``input`` sections: ``x = (p / scale - mean) / std``.

    Returns:
        ``(gains, offsets)``, three floats each.

    Raises:
        InvalidInputError: If the scales differ (the pixels would not match).
    """
    if float(target["scale"]) != float(member["scale"]):
        raise InvalidInputError(
            f"members scale pixels differently ({target['scale']} vs {member['scale']})"
        )
    gains, offsets = [], []
    for mean_t, std_t, mean_m, std_m in zip(
        target["mean"], target["std"], member["mean"], member["std"], strict=True
    ):
        gains.append(float(std_t) / float(std_m))
        offsets.append((float(mean_t) - float(mean_m)) / float(std_m))
    return gains, offsets


def _members_section(description: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        members = list(description[ENSEMBLE]["members"])
    except (KeyError, TypeError):
        raise InvalidInputError(
            "model.json of an ensemble has no 'ensemble.members' list"
        ) from None
    if not members:
        raise InvalidInputError("model.json of an ensemble lists no members")
    return members


def build_ensemble(description: Mapping[str, Any]) -> EnsembleNet:
    """An untrained :class:`EnsembleNet` shaped like ``description`` (a ``model.json``).

    Load ``model.pt`` into it to get the trained ensemble.

    Raises:
        InvalidInputError: If a member is not a built-in network.
    """
    from bcd.algorithms.models import build_model

    members = _members_section(description)
    networks = []
    for member in members:
        hyperparameters = dict(member["hyperparameters"])
        hyperparameters["use_pretrained_model"] = False
        networks.append(build_model(member["algorithm"], hyperparameters))
    ones = [[1.0, 1.0, 1.0]] * len(members)
    zeros = [[0.0, 0.0, 0.0]] * len(members)
    return EnsembleNet(networks, ones, zeros, [0.0] * len(members), [1.0] * len(members))


def _standardisation(margins: np.ndarray) -> tuple[float, float]:
    centre = float(np.mean(margins))
    scale = float(np.std(margins))
    if not np.isfinite(scale) or scale < _MIN_SCALE:
        raise InvalidInputError("a member's validation margins are constant; it cannot be scaled")
    return centre, scale


def write_ensemble(
    member_dirs: Sequence[Path],
    out_dir: Path,
    validation_images: np.ndarray,
    *,
    weights: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Combine trained model folders into one ensemble model folder.

    Each member's validation margins (scored through ONNX Runtime, as serving
    scores) give its centre and scale. The ensemble takes the first member's
    input normalisation.

    Args:
        member_dirs: Model folders of built-in algorithms (``model.json``,
            ``model.onnx``, ``model.pt``), at least two.
        out_dir: Folder to write (created; its model files are replaced).
        validation_images: ``(N, 50, 50, 3)`` uint8 validation patches.
        weights: Member weights (default equal).
        names: Member names recorded in ``model.json`` (default the folder names).

    Returns:
        The ``model.json`` content (uncalibrated: temperature 1, no threshold).

    Raises:
        InvalidInputError: Fewer than two members, a member that is not a
            built-in network, or an ONNX export that disagrees with torch.
    """
    from bcd.algorithms.artifacts import (
        PARITY_TOLERANCE,
        export_onnx,
        load_model,
        onnx_parity,
        onnx_section,
        write_atomically,
    )
    from bcd.evaluation._inference import RuntimeScorer

    if len(member_dirs) < 2:
        raise InvalidInputError("an ensemble needs at least two member models")
    names = list(names or [Path(folder).name for folder in member_dirs])
    descriptions = [json.loads((Path(d) / "model.json").read_text()) for d in member_dirs]
    stained = [
        str(folder)
        for folder, description in zip(member_dirs, descriptions, strict=True)
        if description["input"].get("stain_normalization")
    ]
    if stained:
        # One graph takes one preprocessed input; per-member stain transforms cannot follow.
        raise InvalidInputError(
            f"ensemble members must not use stain_normalization; these do: {', '.join(stained)}"
        )
    target = descriptions[0]["input"]
    networks, gains, offsets, centres, scales = [], [], [], [], []
    for folder, description in zip(member_dirs, descriptions, strict=True):
        scorer = RuntimeScorer(Path(folder))
        try:
            margins = scorer.margins(validation_images, tta=False)[0]
        finally:
            scorer.close()
        centre, scale = _standardisation(margins)
        gain, offset = input_affine(target, description["input"])
        networks.append(load_model(folder))
        gains.append(gain)
        offsets.append(offset)
        centres.append(centre)
        scales.append(scale)
    ensemble = EnsembleNet(
        networks,
        gains,
        offsets,
        centres,
        scales,
        weights,
        output_centre=float(np.mean(centres)),
        output_scale=float(np.mean(scales)),
    ).eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().clone() for key, value in ensemble.state_dict().items()}
    write_atomically(out_dir / "model.pt", lambda temporary: torch.save(state, temporary))
    sample = _normalised(validation_images[:64], target)
    export_onnx(ensemble, sample[:2], out_dir / "model.onnx")
    difference = onnx_parity(out_dir / "model.onnx", ensemble, sample)
    if not difference <= PARITY_TOLERANCE:
        raise InvalidInputError(
            f"the ensemble's ONNX export disagrees with torch by {difference:.3g}"
        )
    member_weights = ensemble.weights.tolist()
    document = {
        "format_version": 1,
        "algorithm": ENSEMBLE,
        "hyperparameters": {"image_shape": "3,50,50", "num_classes": 2, "members": names},
        "input": dict(target),
        "class_names": descriptions[0].get("class_names", ["no IDC", "IDC"]),
        "temperature": 1.0,
        "ensemble": {
            "combination": (
                "weighted mean of standardised IDC margins (validation centre/scale), "
                "times the members' mean scale plus their mean centre"
            ),
            "output_centre": float(np.mean(centres)),
            "output_scale": float(np.mean(scales)),
            "members": [
                {
                    "name": name,
                    "algorithm": description["algorithm"],
                    "hyperparameters": description["hyperparameters"],
                    "input": description["input"],
                    "centre": centre,
                    "scale": scale,
                    "weight": weight,
                    "dataset": description.get("dataset", {}),
                    "metrics": description.get("metrics", {}),
                }
                for name, description, centre, scale, weight in zip(
                    names, descriptions, centres, scales, member_weights, strict=True
                )
            ],
        },
        **onnx_section(difference, int(sample.shape[0])),
        "metrics": {},
        "dataset": descriptions[0].get("dataset", {}),
        "bcd_version": bcd.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    text = json.dumps(document, indent=2, allow_nan=False)
    write_atomically(out_dir / "model.json", lambda temporary: temporary.write_text(text))
    logger.info("wrote a %d-member ensemble (ONNX parity %.2e)", len(networks), difference)
    return document


def _normalised(images: np.ndarray, spec: Mapping[str, Any]) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 normalised as ``spec`` says."""
    pixels = torch.from_numpy(np.array(images, dtype=np.uint8)).permute(0, 3, 1, 2).float()
    mean = torch.tensor(spec["mean"], dtype=torch.float32).reshape(1, 3, 1, 1)
    std = torch.tensor(spec["std"], dtype=torch.float32).reshape(1, 3, 1, 1)
    return (pixels / float(spec["scale"]) - mean) / std
