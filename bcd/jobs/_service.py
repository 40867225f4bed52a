"""The training-job service: create, describe, list, stop, and orphan recovery.

The CLI, :mod:`bcd.clients` and :mod:`bcd.sdk` all go through
:class:`TrainingJobService`. Creating one first marks as ``Failed`` every job
of this machine whose supervisor died without recording an outcome (a machine
restart, a kill), so records never claim a job runs when nothing runs it.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from typing import Any

from bcd._process import is_alive
from bcd.config import Settings, get_settings
from bcd.db import utcnow
from bcd.errors import ConflictError, InvalidInputError
from bcd.jobs import _store
from bcd.jobs._algorithms import prepare, teacher_model_uri
from bcd.jobs._channels import check_channel
from bcd.jobs._launcher import job_dir, start_supervisor, terminate, this_host
from bcd.jobs._spec import PROGRAM_HP, SCRIPT_ALGORITHM, SOURCE_DIR_HP, JobSpec, parse_request
from bcd.jobs._tables import TrainingJobRecord
from bcd.jobs.executors import get_executor
from bcd.storage import FsspecArtifactStore, artifact_store

logger = logging.getLogger(__name__)

ARN_PREFIX = "arn:bcd:sagemaker:local:000000000000:training-job/"
# A job whose supervisor has not recorded its pid after this long never started.
_LAUNCH_GRACE_S = 60.0


class TrainingJobService:
    """Training jobs on this machine's metadata store and artifact store.

    Args:
        settings: Where the metadata store, artifacts and job folders are.
        recover_orphans: Mark orphaned jobs ``Failed`` now (default).
    """

    def __init__(self, settings: Settings | None = None, recover_orphans: bool = True) -> None:
        self.settings = settings or get_settings()
        if recover_orphans:
            self.recover_orphans()

    # -- create ---------------------------------------------------------------------

    def create(self, request: dict[str, Any]) -> str:
        """Validate a ``create_training_job`` request, record the job and start it.

        Returns at once; the job runs in its own supervisor process.

        Args:
            request: boto3 ``create_training_job`` keyword arguments.

        Returns:
            The job's name.

        Raises:
            InvalidInputError: A malformed request, unknown algorithm or
                hyperparameter, missing channel.
            NotFoundError: An unknown dataset, channel folder, or parent job.
            ConflictError: A job with that name exists.
            DependencyMissingError: ``BCD_EXECUTOR=ray`` without Ray installed.
        """
        spec = parse_request(request)
        prepared = prepare(spec)
        teacher_model_uri(spec, self.settings)  # refuses an unknown or unfinished teacher
        spec.metric_definitions = prepared.metric_definitions
        given = {channel.name for channel in spec.channels}
        missing = [name for name in prepared.required_channels if name not in given]
        if missing:
            raise InvalidInputError(
                f"algorithm {spec.algorithm!r} needs the channel(s) {', '.join(missing)}; "
                f"got {', '.join(sorted(given)) or 'none'} (e.g. --dataset NAME gives "
                "train and validation)"
            )
        for channel in spec.channels:
            check_channel(channel.name, channel.uri, self.settings)
        spec.executor = self.settings.executor
        get_executor(spec.executor, self.settings).check(spec)
        if spec.checkpoint_source:
            spec.checkpoint_source = self._parent_checkpoints(spec.checkpoint_source)
        checkpoint_uri = spec.checkpoint_uri or artifact_store(self.settings).url(
            f"training-jobs/{spec.name}/checkpoints"
        )
        workdir = job_dir(self.settings, spec.name)
        record = TrainingJobRecord(
            name=spec.name,
            algorithm=spec.algorithm,
            spec=spec.to_dict(),
            hyperparameters=spec.hyperparameters,
            tags=spec.tags,
            tuning_job_name=spec.tuning_job_name,
            status="InProgress",
            secondary_status="Starting",
            workdir=str(workdir),
            host=this_host(),
            checkpoint_uri=checkpoint_uri,
        )
        _store.insert_job(record, self.settings)
        if workdir.exists():
            # Left by a job record that no longer exists (a reset metadata store).
            shutil.move(str(workdir), str(workdir.with_name(f"{spec.name}.old-{time.time_ns()}")))
        try:
            pid, _ = start_supervisor(spec.name, workdir, self.settings)
        except OSError as error:
            _store.set_status(
                spec.name,
                self.settings,
                status="Failed",
                secondary="Failed",
                message="The job could not be launched",
                failure_reason=f"InternalError: could not start the job supervisor: {error}",
            )
            raise
        # The start time is left for the supervisor to record once it handles
        # SIGTERM: until then a stop request only marks the record (see stop).
        _store.update_job(spec.name, self.settings, supervisor_pid=pid)
        logger.info("training job %s started (%s)", spec.name, spec.algorithm)
        return spec.name

    def _parent_checkpoints(self, parent: str) -> str:
        record = _store.get_job(parent, self.settings)
        uri = record.checkpoint_uri
        store = FsspecArtifactStore(uri, self.settings.storage_options()) if uri else None
        if store is None or not store.list(""):
            raise InvalidInputError(
                f"training job {parent!r} has no checkpoints to start from "
                f"(it is {record.status}; checkpoints are saved every checkpoint_frequency epochs)"
            )
        return str(uri)

    # -- read -----------------------------------------------------------------------

    def describe(self, name: str) -> dict[str, Any]:
        """The job as boto3's ``describe_training_job`` returns it.

        Raises:
            NotFoundError: No such job.
        """
        record = _store.get_job(name, self.settings)
        if (
            record.status in _store.ACTIVE
            and record.host == this_host()
            and record.supervisor_pid is not None
            and not is_alive(record.supervisor_pid, record.supervisor_start)
        ):
            # A long-lived caller (waiter, tuner) learns of a dead supervisor here.
            self.recover_orphans()
            record = _store.get_job(name, self.settings)
        return _describe(record, _store.events(name, self.settings), self.settings)

    def list_jobs(
        self,
        *,
        name_contains: str | None = None,
        status: str | None = None,
        tuning_job_name: str | None = None,
        created_after: dt.datetime | None = None,
        created_before: dt.datetime | None = None,
        sort_by: str = "CreationTime",
        sort_order: str = "Descending",
        offset: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Summaries of the jobs matching the filters (boto3 ``TrainingJobSummaries``).

        Raises:
            InvalidInputError: An unknown status, sort key or order.
        """
        statuses = {"InProgress", "Completed", "Failed", "Stopping", "Stopped"}
        if status is not None and status not in statuses:
            raise InvalidInputError(f"unknown status {status!r}; valid: {sorted(statuses)}")
        if sort_by not in ("CreationTime", "Name", "Status"):
            raise InvalidInputError(
                f"unknown SortBy {sort_by!r}; valid: CreationTime, Name, Status"
            )
        if sort_order not in ("Ascending", "Descending"):
            raise InvalidInputError(
                f"SortOrder must be Ascending or Descending, not {sort_order!r}"
            )
        records = _store.list_jobs(
            self.settings,
            name_contains=name_contains,
            status=status,
            tuning_job_name=tuning_job_name,
            created_after=created_after,
            created_before=created_before,
            sort_by=sort_by,
            descending=sort_order == "Descending",
            offset=offset,
            limit=limit,
        )
        return [_summary(record) for record in records]

    # -- stop -----------------------------------------------------------------------

    def stop(self, name: str) -> None:
        """Ask a running job to stop: ``Stopping`` now, ``Stopped`` once its processes end.

        The job's processes get SIGTERM (time to save a checkpoint), then
        SIGKILL after ``settings.job_stop_grace_s``. Stopping a job that is
        already stopping does nothing.

        Raises:
            NotFoundError: No such job.
            ConflictError: The job has already ended.
        """
        record = _store.get_job(name, self.settings)
        if record.status == "Stopping":
            return
        changed = _store.set_status(
            name,
            self.settings,
            status="Stopping",
            secondary="Stopping",
            message="Stop requested",
            allowed_from={"InProgress"},
        )
        if not changed:
            current = _store.get_job(name, self.settings).status
            if current == "Stopping":
                return
            raise ConflictError(
                f"training job {name!r} is {current}; only InProgress jobs can be stopped"
            )
        record = _store.get_job(name, self.settings)
        # A supervisor that has not recorded its start time yet cannot handle
        # SIGTERM; it reads the Stopping status when it starts instead.
        if record.host == this_host() and record.supervisor_start is not None:
            terminate(record.supervisor_pid, record.supervisor_start)

    # -- orphans --------------------------------------------------------------------

    def recover_orphans(self) -> list[str]:
        """Mark ``Failed`` the running jobs of this machine whose supervisor is gone.

        Returns:
            The names of the jobs marked.
        """
        marked = []
        now = utcnow()
        for record in _store.active_jobs(self.settings, this_host()):
            if record.supervisor_pid is None:
                created = _store.aware(record.created_at)
                if (now - created).total_seconds() < _LAUNCH_GRACE_S:
                    continue
                reason = "its supervisor process never started"
            elif is_alive(record.supervisor_pid, record.supervisor_start):
                continue
            else:
                reason = (
                    f"its supervisor process (pid {record.supervisor_pid}) ended without "
                    "recording an outcome: the machine restarted or the process was killed"
                )
            changed = _store.set_status(
                record.name,
                self.settings,
                status="Failed",
                secondary="Failed",
                message="Orphaned job found and marked Failed",
                failure_reason=f"InternalError: the job was {record.status} but {reason}; "
                f"its log is in {record.workdir}",
                training_end=now,
                final_metrics=_store.final_metrics(record.name, self.settings),
            )
            if changed:
                logger.warning("training job %s was orphaned; marked Failed", record.name)
                marked.append(record.name)
        return marked


def _iso(value: dt.datetime | None) -> dt.datetime | None:
    return _store.aware(value) if value is not None else None


def _summary(record: TrainingJobRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "TrainingJobName": record.name,
        "TrainingJobArn": ARN_PREFIX + record.name,
        "CreationTime": _iso(record.created_at),
        "TrainingEndTime": _iso(record.training_end),
        "LastModifiedTime": _iso(record.last_modified),
        "TrainingJobStatus": record.status,
        "SecondaryStatus": record.secondary_status,
        "AlgorithmName": record.algorithm,
    }
    if record.tuning_job_name:
        summary["TuningJobName"] = record.tuning_job_name
    return summary


def _describe(record: TrainingJobRecord, events: list[Any], settings: Settings) -> dict[str, Any]:
    spec = JobSpec.from_dict(record.spec)
    hyperparameters = dict(spec.hyperparameters)
    if spec.algorithm == SCRIPT_ALGORITHM:
        hyperparameters[PROGRAM_HP] = spec.entry_point or ""
        hyperparameters[SOURCE_DIR_HP] = spec.source_dir or ""
    transitions = []
    for index, event in enumerate(events):
        transition = {
            "Status": event.status,
            "StartTime": _iso(event.start_time),
            "StatusMessage": event.message,
        }
        if index + 1 < len(events):
            transition["EndTime"] = _iso(events[index + 1].start_time)
        transitions.append(transition)
    final = record.final_metrics
    if final is None:
        final = _store.final_metrics(record.name, settings)
    training_seconds = None
    if record.training_start and record.training_end:
        training_seconds = int(
            (
                _store.aware(record.training_end) - _store.aware(record.training_start)
            ).total_seconds()
        )
    description: dict[str, Any] = {
        "TrainingJobName": record.name,
        "TrainingJobArn": ARN_PREFIX + record.name,
        "TrainingJobStatus": record.status,
        "SecondaryStatus": record.secondary_status,
        "AlgorithmSpecification": {
            "AlgorithmName": spec.algorithm,
            "TrainingInputMode": spec.input_mode,
            "MetricDefinitions": spec.metric_definitions,
        },
        "HyperParameters": hyperparameters,
        "InputDataConfig": [
            {
                "ChannelName": channel.name,
                "DataSource": {"S3DataSource": {"S3Uri": channel.uri}},
            }
            for channel in spec.channels
        ],
        "OutputDataConfig": {
            "S3OutputPath": spec.output_path or artifact_store(settings).url("training-jobs")
        },
        "ResourceConfig": {
            "InstanceCount": spec.instance_count,
            "InstanceType": spec.instance_type,
            "VolumeSizeInGB": spec.volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": spec.max_runtime_s},
        "CheckpointConfig": {
            "S3Uri": record.checkpoint_uri,
            "LocalPath": f"{record.workdir}/checkpoints",
        },
        "Environment": spec.environment,
        "Executor": {"Name": spec.executor, "Instances": spec.placements},
        "Tags": spec.tags,
        "CreationTime": _iso(record.created_at),
        "TrainingStartTime": _iso(record.training_start),
        "TrainingEndTime": _iso(record.training_end),
        "LastModifiedTime": _iso(record.last_modified),
        "SecondaryStatusTransitions": transitions,
        "FinalMetricDataList": [
            {
                "MetricName": metric,
                "Value": point["value"],
                "Timestamp": dt.datetime.fromisoformat(point["timestamp"]),
            }
            for metric, point in sorted(final.items())
        ],
        "LogPath": f"{record.workdir}/job.log",
    }
    if record.model_artifact:
        description["ModelArtifacts"] = {"S3ModelArtifacts": record.model_artifact}
    if record.failure_reason:
        description["FailureReason"] = record.failure_reason
    if record.stop_reason:
        description["StopReason"] = record.stop_reason
    if record.billable_seconds is not None:
        description["BillableTimeInSeconds"] = record.billable_seconds
    if training_seconds is not None:
        description["TrainingTimeInSeconds"] = training_seconds
    if spec.tuning_job_name:
        description["TuningJobName"] = spec.tuning_job_name
    if spec.algorithm == SCRIPT_ALGORITHM:
        description["AlgorithmSpecification"]["TrainingImage"] = "bcd-script-mode"
    return description


def get_record(name: str, settings: Settings | None = None) -> TrainingJobRecord:
    """The stored record of a job (for the engine's own tools).

    Raises:
        NotFoundError: No such job.
    """
    return _store.get_job(name, settings or get_settings())
