"""``TransformJobService``: create, describe, list, stop and resume batch transform jobs.

A job runs in its own detached process (``python -m bcd.transform NAME``,
output in ``$BCD_HOME/transform/<name>/runner.log``), so the caller may exit
at once. Creating the service, and describing a job, ends the active jobs of
this host whose process is gone (``Failed``, resumable).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import ConflictError, InvalidInputError
from bcd.transform import _store
from bcd.transform._spec import TransformSpec, parse_request
from bcd.transform._tables import TransformJobRecord

logger = logging.getLogger(__name__)

ARN_PREFIX = "arn:bcd:sagemaker:local:000000000000:transform-job/"
RUNNER_LOG = "runner.log"
_SORT_KEYS = {"CreationTime", "Name", "Status"}


def _iso(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _reap(process: subprocess.Popen[bytes]) -> None:
    process.wait()


class TransformJobService:
    """Batch transform jobs on one metadata store.

    Args:
        settings: Defaults to :func:`bcd.config.get_settings`.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        marked = _store.mark_interrupted(self.settings)
        if marked:
            logger.warning("marked %d interrupted transform jobs Failed", marked)

    def job_dir(self, name: str) -> Path:
        """``$BCD_HOME/transform/<name>``: the runner's log folder."""
        return self.settings.home / "transform" / name

    def create(self, request: dict[str, Any], start: bool = True) -> str:
        """Validate and record a job, then start its process.

        Creating again a job that was stopped or failed with the same request
        resumes it (its finished chunks are kept).

        Args:
            request: boto3 ``create_transform_job`` kwargs as a dict.
            start: Start the detached process (``False``: the caller runs it,
                with :func:`bcd.transform.run_job`).

        Returns:
            The job's name.

        Raises:
            InvalidInputError: A malformed request.
            ConflictError: The name is taken by another request or a live or
                completed job.
        """
        spec = parse_request(request, self.settings.executor)
        self._check_input(spec)
        record = TransformJobRecord(
            name=spec.name,
            status=_store.IN_PROGRESS,
            model_name=spec.model_name,
            input_uri=spec.input_uri,
            output_path=spec.output_path,
            input_kind="pending",
            executor=spec.executor,
            request=spec.request,
            chunks_total=0,
            chunks_done=0,
            records_total=0,
            records_done=0,
            records_failed=0,
            worker=_store.process_identity(),
        )
        try:
            _store.insert(record, self.settings)
        except ConflictError:
            existing = _store.get(spec.name, self.settings)
            if existing.request != spec.request or existing.status == _store.COMPLETED:
                raise
            return self.resume(spec.name, start=start)
        if start:
            self._launch(spec.name)
        return spec.name

    @staticmethod
    def _check_input(spec: TransformSpec) -> None:
        uri = spec.input_uri
        if uri.startswith("dataset://") or "://" in uri.removeprefix("file://"):
            return
        if not Path(uri.removeprefix("file://")).expanduser().exists():
            raise InvalidInputError(
                f"transform input {uri!r} does not exist; pass a folder of patches or "
                "slides, or dataset://NAME/SPLIT"
            )

    def _launch(self, name: str) -> None:
        folder = self.job_dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.settings.child_env(), "PYTHONUNBUFFERED": "1"}
        with open(folder / RUNNER_LOG, "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "bcd.transform", name],
                cwd=folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        threading.Thread(target=_reap, args=(process,), daemon=True).start()
        _store.set_fields(name, self.settings, worker=_store.process_identity(process.pid))

    def resume(self, name: str, start: bool = True) -> str:
        """Continue a stopped, failed or interrupted job from its finished chunks.

        Raises:
            NotFoundError: No such job.
            ConflictError: It completed, or it is still running.
        """
        _store.mark_interrupted(self.settings, name)
        if not _store.restart(name, self.settings, _store.process_identity()):
            current = _store.get(name, self.settings)
            raise ConflictError(
                f"transform job {name!r} is {current.status}; only a stopped or failed "
                "job can be resumed"
            )
        if start:
            self._launch(name)
        return name

    def stop(self, name: str) -> None:
        """Ask a running job to stop after the chunk it is scoring.

        Raises:
            NotFoundError: No such job.
            ConflictError: It has ended already.
        """
        record = _store.get(name, self.settings)
        if not _store.request_stop(name, self.settings) and record.status != _store.STOPPING:
            raise ConflictError(f"transform job {name!r} has ended ({record.status})")
        _store.mark_interrupted(self.settings, name)

    def describe(self, name: str) -> dict[str, Any]:
        """The job in boto3 ``describe_transform_job`` shape, with ``Progress``.

        Raises:
            NotFoundError: No such job.
        """
        _store.mark_interrupted(self.settings, name)
        return _describe(_store.get(name, self.settings))

    def list_jobs(
        self,
        name_contains: str | None = None,
        status_equals: str | None = None,
        max_results: int | None = None,
        sort_by: str = "CreationTime",
        ascending: bool = False,
    ) -> list[dict[str, Any]]:
        """Summaries of jobs (``TransformJobSummaries`` items).

        Raises:
            InvalidInputError: An unknown ``sort_by``.
        """
        if sort_by not in _SORT_KEYS:
            raise InvalidInputError(
                f"SortBy must be one of {', '.join(sorted(_SORT_KEYS))}, not {sort_by!r}"
            )
        _store.mark_interrupted(self.settings)
        rows = _store.list_records(self.settings, name_contains, status_equals, max_results)
        key = {"CreationTime": "created_at", "Name": "name", "Status": "status"}[sort_by]
        rows.sort(key=lambda row: getattr(row, key), reverse=not ascending)
        return [_summary(row) for row in rows]


def _summary(record: TransformJobRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "TransformJobName": record.name,
        "TransformJobArn": ARN_PREFIX + record.name,
        "CreationTime": _iso(record.created_at),
        "TransformEndTime": _iso(record.finished_at),
        "LastModifiedTime": _iso(record.updated_at),
        "TransformJobStatus": record.status,
    }
    if record.failure_reason:
        summary["FailureReason"] = record.failure_reason
    return summary


def _describe(record: TransformJobRecord) -> dict[str, Any]:
    spec = parse_request(record.request, record.executor)
    description = _summary(record)
    description.update(
        {
            "ModelName": spec.model_name,
            "MaxConcurrentTransforms": int(
                record.request.get("MaxConcurrentTransforms", spec.instance_count)
            ),
            "MaxPayloadInMB": spec.max_payload_mb,
            "BatchStrategy": spec.batch_strategy,
            "Environment": dict(record.request.get("Environment") or {}),
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_uri}},
                "ContentType": spec.content_type,
                "SplitType": "None",
                "CompressionType": "None",
            },
            "TransformOutput": {
                "S3OutputPath": spec.output_path,
                "Accept": spec.accept,
                "AssembleWith": "Line",
            },
            "TransformResources": {
                "InstanceType": spec.instance_type,
                "InstanceCount": spec.instance_count,
            },
            "TransformStartTime": _iso(record.started_at),
            "Progress": {
                "InputKind": record.input_kind,
                "ChunksTotal": record.chunks_total,
                "ChunksCompleted": record.chunks_done,
                "RecordsTotal": record.records_total,
                "RecordsCompleted": record.records_done,
                "RecordsFailed": record.records_failed,
            },
            "Executor": record.executor,
        }
    )
    if record.status == _store.COMPLETED:
        description["Results"] = f"{spec.output_path.rstrip('/')}/{spec.results_file}"
    return description
