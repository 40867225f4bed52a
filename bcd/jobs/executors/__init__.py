"""Executors: where the instance processes of a training job run (``BCD_EXECUTOR``).

- ``local`` (:class:`LocalExecutor`): child processes of the job's supervisor
  on this machine (the default).
- ``ray`` (:class:`RayExecutor`): one Ray actor per instance, with the CPUs and
  GPUs of ``ResourceConfig.InstanceType`` (:data:`INSTANCE_TYPES`), on any
  node of the cluster at ``BCD_RAY_ADDRESS``. Needs ``bcd[ray]``.

The job's supervisor owns status, log and metrics with either; the contract
is :class:`BaseExecutor` / :class:`BaseInstance` (see :mod:`._base`), and
``tests/jobs/test_engine.py`` runs the same suite against every executor.
Other layers that run work of their own on the cluster can use
:func:`get_executor` the same way the supervisor does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bcd.errors import InvalidInputError
from bcd.jobs.executors._base import (
    INSTANCE_TYPES,
    LOCAL_INSTANCE_TYPE,
    BaseExecutor,
    BaseInstance,
    InstancePlacement,
    InstanceType,
    LineSink,
    stop_instances,
)
from bcd.jobs.executors._local import LocalExecutor

if TYPE_CHECKING:
    from bcd.config import Settings

EXECUTORS = ("local", "ray")

__all__ = [
    "EXECUTORS",
    "INSTANCE_TYPES",
    "LOCAL_INSTANCE_TYPE",
    "BaseExecutor",
    "BaseInstance",
    "InstancePlacement",
    "InstanceType",
    "LineSink",
    "LocalExecutor",
    "get_executor",
    "stop_instances",
]


def get_executor(name: str, settings: Settings) -> BaseExecutor:
    """A new executor of that name.

    Args:
        name: ``local`` or ``ray``.
        settings: Passed to executors that need them (the Ray address).

    Raises:
        InvalidInputError: An unknown name.
    """
    if name == "local":
        return LocalExecutor()
    if name == "ray":
        from bcd.jobs.executors._ray import RayExecutor

        return RayExecutor(settings)
    raise InvalidInputError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
