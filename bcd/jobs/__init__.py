"""The training-job engine: detached job processes, logs, metrics, stop, max runtime.

A job runs under its own supervisor process (``python -m bcd.jobs.supervisor
NAME``), which starts one process per instance under the script-mode contract
(docs/architecture.md, docs/jobs.md), through an executor
(:mod:`bcd.jobs.executors`: child processes here, or Ray actors with
``BCD_EXECUTOR=ray``, docs/cluster.md). Public API::

    TrainingJobService(settings).create(request) / describe / list_jobs / stop / recover_orphans
    create_training_job(request), describe_training_job(name), stop_training_job(name)
    get_metric_series(job_name, metric_name) -> [MetricPoint]   # readable while the job runs
    list_metric_names(job_name), read_log(job_name), follow_log(job_name)
    plot_training_curves(job_name, out_png)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bcd.config import Settings, get_settings
from bcd.jobs import _logs, _plot, _store
from bcd.jobs._service import ARN_PREFIX, TrainingJobService
from bcd.jobs._spec import TUNING_TAG, check_data_locations, unique_job_name
from bcd.jobs._store import ACTIVE, TERMINAL, MetricPoint

__all__ = [
    "ACTIVE",
    "ARN_PREFIX",
    "TERMINAL",
    "TUNING_TAG",
    "MetricPoint",
    "TrainingJobService",
    "check_data_locations",
    "create_training_job",
    "describe_training_job",
    "follow_log",
    "get_metric_series",
    "list_metric_names",
    "log_path",
    "plot_training_curves",
    "read_log",
    "stop_training_job",
    "unique_job_name",
]


def get_metric_series(
    job_name: str, metric_name: str, settings: Settings | None = None
) -> list[MetricPoint]:
    """All points so far of one metric of a job, in order (readable while it runs).

    Args:
        job_name: The training job.
        metric_name: An algorithm metric (``validation:bac``) or an instance
            metric (``CPUUtilization``).
        settings: Where the metadata store is.

    Returns:
        The points by step; empty when the job has not reported the metric yet.

    Raises:
        NotFoundError: No such job.
    """
    settings = settings or get_settings()
    _store.get_job(job_name, settings)
    return _store.metric_series(job_name, metric_name, settings)


def list_metric_names(
    job_name: str, settings: Settings | None = None, source: str | None = None
) -> list[str]:
    """Names of the metrics a job has recorded (``source``: ``algorithm`` or ``instance``).

    Raises:
        NotFoundError: No such job.
    """
    settings = settings or get_settings()
    _store.get_job(job_name, settings)
    return _store.metric_names(job_name, settings, source)


def log_path(job_name: str, settings: Settings | None = None) -> Path:
    """The job's log file. Raises NotFoundError for an unknown job."""
    return _logs.log_path(job_name, settings or get_settings())


def read_log(job_name: str, settings: Settings | None = None, tail: int | None = None) -> list[str]:
    """The job's log lines so far (the last ``tail``). Raises NotFoundError."""
    return _logs.read_log(job_name, settings or get_settings(), tail)


def follow_log(job_name: str, settings: Settings | None = None, poll_s: float = 0.5):  # type: ignore[no-untyped-def]
    """Yield the job's log lines as written until it ends. Raises NotFoundError."""
    return _logs.follow_log(job_name, settings or get_settings(), poll_s)


def plot_training_curves(job_name: str, out: Path, settings: Settings | None = None) -> Path:
    """Draw the job's training/validation curves into a PNG; see :mod:`bcd.jobs._plot`."""
    return _plot.plot_training_curves(job_name, Path(out), settings or get_settings())


def create_training_job(request: dict[str, Any], settings: Settings | None = None) -> str:
    """Create and start a job from ``create_training_job`` keyword arguments; its name.

    See :meth:`TrainingJobService.create` for the errors it raises.
    """
    return TrainingJobService(settings).create(request)


def describe_training_job(job_name: str, settings: Settings | None = None) -> dict[str, Any]:
    """The job as boto3's ``describe_training_job`` returns it. Raises NotFoundError."""
    return TrainingJobService(settings).describe(job_name)


def stop_training_job(job_name: str, settings: Settings | None = None) -> None:
    """Ask a running job to stop. Raises NotFoundError, or ConflictError once it ended."""
    TrainingJobService(settings).stop(job_name)
