"""Batch transform (SageMaker's offline scoring job): score many patches or slides at once.

- :class:`TransformJobService` — create, describe, list, stop and resume jobs;
  each runs in its own detached process (``python -m bcd.transform NAME``).
- :func:`run_job` — run a recorded job in this process (what that process does).
- Inputs: ``dataset://NAME/SPLIT`` (packed patches), a folder of patch images,
  or a folder of slides (each analysed by :mod:`bcd.slides`). Scoring uses the
  serving runtime (ONNX Runtime); chunks run here or as Ray tasks.
- Outputs: one file per finished chunk (a resumed job skips those), then
  ``results.csv`` or ``results.json`` and ``summary.json``.
"""

from __future__ import annotations

from typing import Any

from bcd.config import Settings
from bcd.transform._runner import run_job
from bcd.transform._service import ARN_PREFIX, TransformJobService
from bcd.transform._spec import TransformSpec, parse_request
from bcd.transform._store import ACTIVE, TERMINAL

__all__ = [
    "ACTIVE",
    "ARN_PREFIX",
    "TERMINAL",
    "TransformJobService",
    "TransformSpec",
    "create_transform_job",
    "describe_transform_job",
    "parse_request",
    "run_job",
    "stop_transform_job",
]


def create_transform_job(request: dict[str, Any], settings: Settings | None = None) -> str:
    """Record and start a transform job; see :meth:`TransformJobService.create`."""
    return TransformJobService(settings).create(request)


def describe_transform_job(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The job's description; see :meth:`TransformJobService.describe`."""
    return TransformJobService(settings).describe(name)


def stop_transform_job(name: str, settings: Settings | None = None) -> None:
    """Ask a job to stop; see :meth:`TransformJobService.stop`."""
    TransformJobService(settings).stop(name)
