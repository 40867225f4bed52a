"""Low-level client calls for hyperparameter tuning jobs (boto3 SageMaker shapes)."""

from __future__ import annotations

from typing import Any

from bcd.clients._base import BaseClient, Waiter
from bcd.errors import InvalidInputError

_SORT_ORDERS = ("Ascending", "Descending")


class TuningMixin(BaseClient):
    """Client methods for hyperparameter tuning jobs."""

    def create_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
        HyperParameterTuningJobConfig: dict[str, Any],
        TrainingJobDefinition: dict[str, Any],
        WarmStartConfig: dict[str, Any] | None = None,
        Tags: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """Validate, record and start a tuning job (its driver runs detached).

        Returns:
            ``{"HyperParameterTuningJobArn"}``.

        Raises:
            InvalidInputError: An invalid request; the message names the key.
            ConflictError: The name is taken.
            NotFoundError: A warm-start parent does not exist.
        """
        from bcd import tuning

        request: dict[str, Any] = {
            "HyperParameterTuningJobName": HyperParameterTuningJobName,
            "HyperParameterTuningJobConfig": HyperParameterTuningJobConfig,
            "TrainingJobDefinition": TrainingJobDefinition,
        }
        if WarmStartConfig is not None:
            request["WarmStartConfig"] = WarmStartConfig
        if Tags is not None:
            request["Tags"] = Tags
        return tuning.create_tuning_job(request, self.settings)

    def describe_hyper_parameter_tuning_job(
        self, *, HyperParameterTuningJobName: str
    ) -> dict[str, Any]:
        """Status, counters, best training job and configuration of a tuning job.

        Raises:
            NotFoundError: No such tuning job.
        """
        from bcd import tuning

        return tuning.describe_tuning_job(HyperParameterTuningJobName, self.settings)

    def list_hyper_parameter_tuning_jobs(
        self,
        *,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        MaxResults: int | None = None,
        SortOrder: str = "Descending",
    ) -> dict[str, Any]:
        """Summaries of tuning jobs, by creation time.

        Returns:
            ``{"HyperParameterTuningJobSummaries": [...]}``.
        """
        from bcd import tuning

        _check_sort_order(SortOrder)
        summaries = tuning.list_tuning_jobs(
            self.settings, name_contains=NameContains, status=StatusEquals, max_results=MaxResults
        )
        if SortOrder == "Ascending":
            summaries.reverse()
        return {"HyperParameterTuningJobSummaries": summaries}

    def list_training_jobs_for_hyper_parameter_tuning_job(
        self,
        *,
        HyperParameterTuningJobName: str,
        StatusEquals: str | None = None,
        SortBy: str = "CreationTime",
        SortOrder: str = "Ascending",
        MaxResults: int | None = None,
    ) -> dict[str, Any]:
        """The training jobs (trials) of a tuning job, with tuned values and objectives.

        Returns:
            ``{"TrainingJobSummaries": [...]}``.

        Raises:
            NotFoundError: No such tuning job.
            InvalidInputError: An unknown ``SortBy`` or ``SortOrder``.
        """
        from bcd import tuning

        _check_sort_order(SortOrder)
        summaries = tuning.list_trials(
            HyperParameterTuningJobName,
            self.settings,
            status=StatusEquals,
            sort_by=SortBy,
            descending=SortOrder == "Descending",
        )
        if MaxResults is not None:
            summaries = summaries[:MaxResults]
        return {"TrainingJobSummaries": summaries}

    def stop_hyper_parameter_tuning_job(
        self, *, HyperParameterTuningJobName: str
    ) -> dict[str, Any]:
        """Stop a tuning job and its running training jobs.

        Raises:
            NotFoundError: No such tuning job.
            ConflictError: It has already ended.
        """
        from bcd import tuning

        tuning.stop_tuning_job(HyperParameterTuningJobName, self.settings)
        return {}

    def _waiters(self) -> dict[str, Waiter]:
        waiters = super()._waiters()
        waiters["hyper_parameter_tuning_job_completed_or_stopped"] = Waiter(
            self.describe_hyper_parameter_tuning_job,
            "HyperParameterTuningJobStatus",
            {"Completed", "Stopped"},
            {"Failed"},
        )
        return waiters


def _check_sort_order(order: str) -> None:
    if order not in _SORT_ORDERS:
        raise InvalidInputError(f"SortOrder must be Ascending or Descending, not {order!r}")
