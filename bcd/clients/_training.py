"""Low-level client calls for training jobs."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from bcd.clients._base import BaseClient, Waiter
from bcd.errors import InvalidInputError

if TYPE_CHECKING:
    from bcd.jobs import TrainingJobService


class TrainingMixin(BaseClient):
    """Client methods for training jobs (create, describe, list, stop).

    Requests and responses are boto3's SageMaker dicts; see docs/jobs.md for
    the fields bcd adds (``Uri`` channels, ``CheckpointConfig.SourceTrainingJobName``,
    the ``bcd:tuning-job`` tag and the ``TuningJobName`` list filter, ``StopReason``).
    """

    _training_service: TrainingJobService | None = None

    def _training(self) -> TrainingJobService:
        # Created once per client; creating it marks orphaned jobs Failed.
        if self._training_service is None:
            from bcd.jobs import TrainingJobService

            self._training_service = TrainingJobService(self.settings)
        return self._training_service

    def create_training_job(self, **request: Any) -> dict[str, Any]:
        """Create a training job and start it in the background.

        Args:
            **request: ``TrainingJobName``, ``AlgorithmSpecification``
                (``AlgorithmName`` or ``TrainingImage``, ``TrainingInputMode``,
                ``MetricDefinitions``), ``HyperParameters``, ``InputDataConfig``,
                ``OutputDataConfig``, ``ResourceConfig``, ``StoppingCondition``,
                ``CheckpointConfig``, ``Environment``, ``Tags``.

        Returns:
            ``{"TrainingJobArn": …}``.

        Raises:
            InvalidInputError: A malformed request, unknown algorithm or hyperparameter.
            NotFoundError: An unknown dataset, channel folder or parent job.
            ConflictError: The name is taken.
        """
        from bcd.jobs import ARN_PREFIX

        name = self._training().create(request)
        return {"TrainingJobArn": ARN_PREFIX + name}

    def describe_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        """The job's status, transitions, metrics, artifacts and configuration.

        Raises:
            NotFoundError: No such job.
        """
        return self._training().describe(TrainingJobName)

    def list_training_jobs(
        self,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        CreationTimeAfter: dt.datetime | None = None,
        CreationTimeBefore: dt.datetime | None = None,
        SortBy: str = "CreationTime",
        SortOrder: str = "Descending",
        MaxResults: int = 100,
        NextToken: str | None = None,
        TuningJobName: str | None = None,
    ) -> dict[str, Any]:
        """Summaries of training jobs, newest first by default, paged like boto3.

        Args:
            NameContains: Only names containing this.
            StatusEquals: Only jobs in this status.
            CreationTimeAfter: Only jobs created after this time.
            CreationTimeBefore: Only jobs created before this time.
            SortBy: ``CreationTime``, ``Name`` or ``Status``.
            SortOrder: ``Ascending`` or ``Descending``.
            MaxResults: Page size (1–1000).
            NextToken: The token of the previous page.
            TuningJobName: Only the trials of this tuning job (bcd extension).

        Returns:
            ``{"TrainingJobSummaries": [...], "NextToken": …}`` (no token on the last page).

        Raises:
            InvalidInputError: A bad filter, page size or token.
        """
        if not isinstance(MaxResults, int) or not 1 <= MaxResults <= 1000:
            raise InvalidInputError(f"MaxResults must be 1-1000, got {MaxResults!r}")
        try:
            offset = int(NextToken) if NextToken else 0
        except ValueError:
            raise InvalidInputError(
                f"NextToken {NextToken!r} is not one this client gave"
            ) from None
        summaries = self._training().list_jobs(
            name_contains=NameContains,
            status=StatusEquals,
            tuning_job_name=TuningJobName,
            created_after=CreationTimeAfter,
            created_before=CreationTimeBefore,
            sort_by=SortBy,
            sort_order=SortOrder,
            offset=offset,
            limit=MaxResults + 1,
        )
        response: dict[str, Any] = {"TrainingJobSummaries": summaries[:MaxResults]}
        if len(summaries) > MaxResults:
            response["NextToken"] = str(offset + MaxResults)
        return response

    def stop_training_job(self, TrainingJobName: str) -> dict[str, Any]:
        """Stop a running job (``Stopping``, then ``Stopped`` with its last checkpoint kept).

        Raises:
            NotFoundError: No such job.
            ConflictError: The job has already ended.
        """
        self._training().stop(TrainingJobName)
        return {}

    def _waiters(self) -> dict[str, Waiter]:
        waiters = super()._waiters()
        waiters["training_job_completed_or_stopped"] = Waiter(
            self.describe_training_job,
            "TrainingJobStatus",
            success={"Completed", "Stopped"},
            failure={"Failed"},
        )
        return waiters
