"""Training checkpoints: plain dicts that carry their own configuration.

A checkpoint is ``checkpoint-epoch<NNNN>.pt`` in ``BCD_CHECKPOINT_DIR``. It holds
tensors, numbers, strings, lists and dicts only, so it loads with
``torch.load(weights_only=True)`` and cannot run code. It is written aside and
renamed, so a crash never leaves a half-written file under the real name; the
newest two are kept.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEEP = 2
_NAME = re.compile(r"^checkpoint-epoch(\d+)\.pt$")
REQUIRED_KEYS = frozenset(
    {"format_version", "algorithm", "hyperparameters", "epoch", "model", "optimizer"}
)


def checkpoint_path(directory: Path, epoch: int) -> Path:
    """``directory/checkpoint-epoch<epoch:04d>.pt``."""
    return directory / f"checkpoint-epoch{epoch:04d}.pt"


def list_checkpoints(directory: Path | None) -> list[Path]:
    """Checkpoint files in ``directory``, oldest epoch first (none if it is missing)."""
    if directory is None or not directory.is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in directory.iterdir()
        if (match := _NAME.match(path.name)) and path.is_file()
    ]
    return [path for _, path in sorted(found)]


def latest_checkpoint(directory: Path | None) -> Path | None:
    """The checkpoint with the highest epoch, or ``None``."""
    checkpoints = list_checkpoints(directory)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(directory: Path, state: dict[str, Any], keep: int = KEEP) -> Path:
    """Write ``state`` atomically as the checkpoint of ``state["epoch"]``.

    Args:
        directory: ``BCD_CHECKPOINT_DIR``; created when missing.
        state: The checkpoint dict (see :data:`REQUIRED_KEYS`).
        keep: How many of the newest checkpoints to keep.

    Returns:
        The path written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, int(state["epoch"]))
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "wb") as handle:
        torch.save({"format_version": FORMAT_VERSION, **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    logger.info("saved checkpoint %s", path.name)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read and check one checkpoint.

    Args:
        path: A checkpoint file.

    Returns:
        The checkpoint dict, tensors on the CPU.

    Raises:
        InvalidInputError: If the file is unreadable, not a bcd checkpoint, or
            of an unknown format version; the message names the file.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InvalidInputError(
            f"checkpoint {str(path)!r} is corrupt or unreadable ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else 'no detail'}); delete it to "
            "resume from an older checkpoint or to start over"
        ) from None
    if not isinstance(state, dict) or not set(state) >= REQUIRED_KEYS:
        missing = sorted(REQUIRED_KEYS - set(state)) if isinstance(state, dict) else "all"
        raise InvalidInputError(
            f"checkpoint {str(path)!r} is not a bcd training checkpoint (missing {missing}); "
            "delete it or point BCD_CHECKPOINT_DIR elsewhere"
        )
    if state["format_version"] != FORMAT_VERSION:
        raise InvalidInputError(
            f"checkpoint {str(path)!r} has format version {state['format_version']}; "
            f"this bcd reads version {FORMAT_VERSION}"
        )
    return state


def check_compatible(
    state: dict[str, Any], algorithm: str, hyperparameters: dict[str, Any], path: Path
) -> None:
    """Refuse to resume a checkpoint into a different network.

    Raises:
        InvalidInputError: If the algorithm or a hyperparameter that shapes the
            network differs.
    """
    if state["algorithm"] != algorithm:
        raise InvalidInputError(
            f"checkpoint {str(path)!r} is from algorithm {state['algorithm']!r}, not "
            f"{algorithm!r}; start from a checkpoint of the same algorithm"
        )
    for name in ("num_classes", "image_shape", "num_layers", "stem", "architecture"):
        saved = state["hyperparameters"].get(name)
        current = hyperparameters.get(name)
        if saved != current and not (name == "architecture" and saved is None):
            raise InvalidInputError(
                f"checkpoint {str(path)!r} was trained with {name}={saved!r} but this job "
                f"has {name}={current!r}; they must match to resume"
            )
