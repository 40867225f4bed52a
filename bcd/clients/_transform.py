"""Low-level client calls for batch transform jobs (boto3 SageMaker shapes)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bcd.clients._base import BaseClient, Waiter
from bcd.errors import InvalidInputError

if TYPE_CHECKING:
    from bcd.transform import TransformJobService


class TransformMixin(BaseClient):
    """Client methods for transform jobs (create, describe, list, stop).

    See docs/transform.md for the inputs bcd reads (``dataset://NAME/SPLIT``,
    folders of patches or slides) and what bcd adds to the responses
    (``Progress``, ``Results``, ``Executor``).
    """

    _transform_service: TransformJobService | None = None

    def _transforms(self) -> TransformJobService:
        # Created once per client; creating it ends jobs whose process is gone.
        if self._transform_service is None:
            from bcd.transform import TransformJobService

            self._transform_service = TransformJobService(self.settings)
        return self._transform_service

    def create_transform_job(self, **request: Any) -> dict[str, Any]:
        """Create a transform job and start it in the background.

        Creating again a stopped or failed job with the same arguments resumes
        it from its finished chunks.

        Args:
            **request: ``TransformJobName``, ``ModelName``, ``TransformInput``
                (``DataSource.S3DataSource.S3Uri``, ``ContentType``,
                ``SplitType``), ``TransformOutput`` (``S3OutputPath``,
                ``Accept``), ``TransformResources`` (``InstanceType``,
                ``InstanceCount``), ``BatchStrategy``, ``MaxPayloadInMB``,
                ``MaxConcurrentTransforms``, ``Environment``, ``Tags``.

        Returns:
            ``{"TransformJobArn": …}``.

        Raises:
            InvalidInputError: A malformed request; the message names the key.
            ConflictError: The name is taken.
        """
        from bcd.transform import ARN_PREFIX

        name = self._transforms().create(request)
        return {"TransformJobArn": ARN_PREFIX + name}

    def describe_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """Status, progress, failure reason and configuration of a transform job.

        Raises:
            NotFoundError: No such job.
        """
        return self._transforms().describe(TransformJobName)

    def list_transform_jobs(
        self,
        *,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        SortBy: str = "CreationTime",
        SortOrder: str = "Descending",
        MaxResults: int | None = None,
    ) -> dict[str, Any]:
        """Summaries of transform jobs.

        Returns:
            ``{"TransformJobSummaries": [...]}``.

        Raises:
            InvalidInputError: An unknown ``SortBy`` or ``SortOrder``.
        """
        if SortOrder not in ("Ascending", "Descending"):
            raise InvalidInputError(f"SortOrder must be Ascending or Descending, not {SortOrder!r}")
        summaries = self._transforms().list_jobs(
            name_contains=NameContains,
            status_equals=StatusEquals,
            max_results=MaxResults,
            sort_by=SortBy,
            ascending=SortOrder == "Ascending",
        )
        return {"TransformJobSummaries": summaries}

    def resume_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """Continue a stopped or failed transform job from its finished chunks (bcd's addition).

        Returns:
            ``{"TransformJobArn": …}``.

        Raises:
            NotFoundError: No such job.
            ConflictError: It completed, or it is still running.
        """
        from bcd.transform import ARN_PREFIX

        return {"TransformJobArn": ARN_PREFIX + self._transforms().resume(TransformJobName)}

    def stop_transform_job(self, *, TransformJobName: str) -> dict[str, Any]:
        """Stop a transform job after the chunk it is scoring (it ends ``Stopped``).

        Raises:
            NotFoundError: No such job.
            ConflictError: It has ended already.
        """
        self._transforms().stop(TransformJobName)
        return {}

    def _waiters(self) -> dict[str, Waiter]:
        waiters = super()._waiters()
        waiters["transform_job_completed_or_stopped"] = Waiter(
            self.describe_transform_job, "TransformJobStatus", {"Completed", "Stopped"}, {"Failed"}
        )
        return waiters
