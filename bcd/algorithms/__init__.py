"""Training algorithms: ``image-classification`` (ResNet), ``cnn`` and ``script``.

The job engine looks an algorithm up by name, validates hyperparameters with it
and runs its :meth:`~Algorithm.command` as a child process under the training
job contract (``docs/architecture.md``). Built-in algorithms run
``python -m bcd.algorithms.train`` (:mod:`bcd.algorithms.train`); ``script``
runs the user's own file. Importing this package does not import torch.

Example:
    >>> algorithm = get_algorithm("cnn")
    >>> hyperparameters = algorithm.validate_hyperparameters({"epochs": "3"})
    >>> argv = algorithm.command(hyperparameters)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bcd.algorithms._base import Algorithm
from bcd.algorithms._builtin import CNN, IMAGE_CLASSIFICATION, BuiltinAlgorithm
from bcd.algorithms._hyperparameters import Hyperparameter
from bcd.algorithms._script import (
    SCRIPT,
    ScriptAlgorithm,
    script_command,
    validate_metric_definitions,
)
from bcd.algorithms.metrics import METRIC_NAMES, builtin_metric_definitions
from bcd.errors import InvalidInputError

if TYPE_CHECKING:
    from pathlib import Path

    import torch

__all__ = [
    "METRIC_NAMES",
    "Algorithm",
    "BuiltinAlgorithm",
    "Hyperparameter",
    "ScriptAlgorithm",
    "builtin_metric_definitions",
    "get_algorithm",
    "list_algorithms",
    "load_model",
    "script_command",
    "validate_metric_definitions",
]

_ALGORITHMS: dict[str, Algorithm] = {
    algorithm.name: algorithm for algorithm in (IMAGE_CLASSIFICATION, CNN, SCRIPT)
}


def list_algorithms() -> list[str]:
    """The names of all algorithms, sorted."""
    return sorted(_ALGORITHMS)


def get_algorithm(name: str) -> Algorithm:
    """Look an algorithm up by name.

    Args:
        name: ``"image-classification"``, ``"cnn"`` or ``"script"``.

    Returns:
        The algorithm (a shared, stateless object).

    Raises:
        InvalidInputError: For an unknown name; the message lists the valid ones.
    """
    try:
        return _ALGORITHMS[name]
    except (KeyError, TypeError):
        raise InvalidInputError(
            f"unknown algorithm {name!r}; valid algorithms: {', '.join(list_algorithms())}"
        ) from None


def load_model(model_dir: str | Path, **kwargs: Any) -> torch.nn.Module:
    """Rebuild a trained built-in model from ``model.json`` + ``model.pt``.

    See :func:`bcd.algorithms.artifacts.load_model` (imports torch).
    """
    from bcd.algorithms.artifacts import load_model as _load_model

    return _load_model(model_dir, **kwargs)
