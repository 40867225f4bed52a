"""What the tuning driver needs from the training-job engine, in one place.

Each trial is an ordinary training job, created, watched and stopped through
the engine's service (:class:`bcd.jobs.TrainingJobService`, which the client,
SDK and CLI use too), and tagged with its tuning job (``bcd:tuning-job``).
The per-epoch series of the objective metric, needed for early stopping,
comes from :func:`bcd.jobs.get_metric_series`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bcd.config import Settings
from bcd.errors import BcdError, NotFoundError
from bcd.tuning._config import TUNING_TAG, TuningJobConfig, format_value

logger = logging.getLogger(__name__)

TERMINAL = frozenset({"Completed", "Failed", "Stopped"})


@dataclass(frozen=True)
class JobState:
    """A training job as the driver sees it.

    Attributes:
        status: ``InProgress``, ``Stopping``, ``Completed``, ``Failed`` or ``Stopped``.
        failure_reason: Why it failed, when it did.
        final_metrics: The last recorded value of each metric.
        started: When training started, if it has.
        ended: When training ended, if it has.
    """

    status: str
    failure_reason: str | None
    final_metrics: Mapping[str, float]
    started: Any = None
    ended: Any = None

    @property
    def terminal(self) -> bool:
        """Whether the job has ended."""
        return self.status in TERMINAL


@dataclass(frozen=True)
class MetricValue:
    """One point of a metric series: its step (epoch when known) and value."""

    step: int
    value: float


class TrainingBackend:
    """Creates, watches and stops the training jobs of trials.

    Args:
        settings: Where the metadata store, artifacts and datasets are.
    """

    def __init__(self, settings: Settings) -> None:
        from bcd.jobs import TrainingJobService

        self.settings = settings
        self._jobs = TrainingJobService(settings)

    def create(
        self, job_name: str, config: TuningJobConfig, hyperparameters: Mapping[str, Any]
    ) -> None:
        """Start the training job of one trial.

        Raises:
            BcdError: The engine refused the request (the trial counts as failed).
        """
        definition = dict(config.definition)
        static = dict(definition.pop("StaticHyperParameters", None) or {})
        tuned = {name: format_value(value) for name, value in hyperparameters.items()}
        tags = [{"Key": TUNING_TAG, "Value": config.name}, *config.tags]
        self._jobs.create(
            {
                **definition,
                "TrainingJobName": job_name,
                "HyperParameters": {**static, **tuned},
                "Tags": tags,
            }
        )

    def state(self, job_name: str) -> JobState:
        """The job's status and final metrics."""
        description = self._jobs.describe(job_name)
        final = {
            item["MetricName"]: float(item["Value"])
            for item in description.get("FinalMetricDataList") or []
        }
        return JobState(
            status=description["TrainingJobStatus"],
            failure_reason=description.get("FailureReason"),
            final_metrics=final,
            started=description.get("TrainingStartTime"),
            ended=description.get("TrainingEndTime"),
        )

    def exists(self, job_name: str) -> bool:
        """Whether a training job of that name was created."""
        try:
            self._jobs.describe(job_name)
        except NotFoundError:
            return False
        return True

    def series(self, job_name: str, metric_name: str) -> list[MetricValue]:
        """The points of one metric series so far, oldest first.

        The step is the epoch named on the log line when there is one, else
        the point's index, so Optuna compares trials epoch by epoch.
        """
        from bcd.jobs import get_metric_series

        return [
            MetricValue(
                step=point.epoch if point.epoch is not None else point.step, value=point.value
            )
            for point in get_metric_series(job_name, metric_name, self.settings)
        ]

    def stop(self, job_name: str) -> None:
        """Ask a running job to stop (it saves a checkpoint and ends ``Stopped``)."""
        try:
            self._jobs.stop(job_name)
        except BcdError as error:  # a job that just ended refuses a stop; nothing to do
            logger.debug("stop of training job %s refused: %s", job_name, error)
