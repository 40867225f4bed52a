"""Tuning-job services: create, describe, list, stop, resume; the best training job.

These are what the low-level client, the SDK and the CLI call. Requests and
answers use SageMaker's names and dict shapes (``HyperParameterTuningJobConfig``,
``TrainingJobStatusCounters``, ``BestTrainingJob``, …).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from bcd.tuning import _store
from bcd.tuning._config import TuningJobConfig, parse_request
from bcd.tuning._process import start_driver, tuning_dir, worker_alive
from bcd.tuning._tables import TuningJobRecord, TuningTrialRecord
from bcd.tuning._validate import validate_against_algorithm

logger = logging.getLogger(__name__)

_TRAINING_ARN_PREFIX = "arn:bcd:sagemaker:local:000000000000:training-job/"


def load_request_file(path: str | Path) -> dict[str, Any]:
    """Read a tuning-job request from a YAML or JSON file.

    Raises:
        InvalidInputError: The file is missing, unreadable or not a mapping.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"tuning config {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as error:
        raise InvalidInputError(f"tuning config {str(path)!r} cannot be read: {error}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(
            f"tuning config {str(path)!r} must hold a mapping with HyperParameterTuningJobName, "
            "HyperParameterTuningJobConfig and TrainingJobDefinition"
        )
    return data


def validate_request(
    request: Mapping[str, Any], settings: Settings | None = None
) -> TuningJobConfig:
    """Check a request completely, as ``create`` would, without creating anything.

    Raises:
        InvalidInputError: The first problem found, prefixed with its key path.
        NotFoundError: A warm-start parent does not exist.
    """
    settings = settings or get_settings()
    config = parse_request(request)
    validate_against_algorithm(config)
    from bcd.jobs import check_data_locations

    check_data_locations(config.definition, "TrainingJobDefinition.")
    for index, parent in enumerate(config.parents):
        record = _store.get_job(parent, settings) if _exists(parent, settings) else None
        path = f"WarmStartConfig.ParentHyperParameterTuningJobs[{index}]"
        if record is None:
            raise NotFoundError(f"{path}: tuning job {parent!r} does not exist")
        if record.status not in _store.TERMINAL:
            raise InvalidInputError(
                f"{path}: tuning job {parent!r} is {record.status}; a parent must have ended"
            )
        if record.objective_metric != config.objective_metric:
            raise InvalidInputError(
                f"{path}: tuning job {parent!r} optimised {record.objective_metric!r}, not "
                f"{config.objective_metric!r}; parents must share the objective metric"
            )
    return config


def create_tuning_job(
    request: Mapping[str, Any], settings: Settings | None = None, *, start: bool = True
) -> dict[str, Any]:
    """Validate, record and start a tuning job.

    Args:
        request: SageMaker's ``CreateHyperParameterTuningJob`` keys.
        settings: Where the metadata store is.
        start: Start the detached driver process (False: the caller runs
            :func:`bcd.tuning.drive` itself).

    Returns:
        ``{"HyperParameterTuningJobArn": …}``.

    Raises:
        InvalidInputError: The request is invalid (the message names the key).
        ConflictError: A tuning job of that name exists.
        NotFoundError: A warm-start parent does not exist.
    """
    from bcd.tuning._study import create_study
    from bcd.tuning._warm import seed_from_parents

    settings = settings or get_settings()
    config = validate_request(request, settings)
    if _exists(config.name, settings):
        raise ConflictError(f"tuning job {config.name!r} already exists; choose another name")
    study = create_study(config, settings)
    if not study.trials and config.parents:
        seeded = seed_from_parents(study, config, settings)
        logger.info("tuning job %s: %d trials seeded from parents", config.name, seeded)
    _store.insert_job(
        TuningJobRecord(
            name=config.name,
            status="InProgress",
            strategy=config.strategy,
            objective_metric=config.objective_metric,
            objective_type=config.objective_type,
            max_jobs=config.max_jobs,
            max_parallel=config.max_parallel,
            request=dict(config.request),
            study_name=study.study_name,
            launched=0,
            finished=0,
            stop_requested=False,
        ),
        settings,
    )
    if start:
        start_driver(config.name, settings)
    return {"HyperParameterTuningJobArn": arn(config.name)}


def arn(name: str) -> str:
    """The bcd stand-in for a SageMaker ARN of tuning job ``name``."""
    return f"arn:bcd:sagemaker:local:000000000000:hyper-parameter-tuning-job/{name}"


def describe_tuning_job(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """Everything about a tuning job, in ``DescribeHyperParameterTuningJob``'s shape.

    Besides SageMaker's keys it carries ``TrainingJobStatusCounters.Pruned``
    (trials stopped by early stopping) and ``Driver`` (host, pid, alive).

    Raises:
        NotFoundError: No such tuning job.
    """
    settings = settings or get_settings()
    record = _store.get_job(name, settings)
    rows = _store.trials(name, settings)
    request = record.request
    description: dict[str, Any] = {
        "HyperParameterTuningJobName": record.name,
        "HyperParameterTuningJobArn": arn(record.name),
        "HyperParameterTuningJobConfig": request["HyperParameterTuningJobConfig"],
        "TrainingJobDefinition": request["TrainingJobDefinition"],
        "HyperParameterTuningJobStatus": record.status,
        "CreationTime": _store.aware(record.created_at),
        "LastModifiedTime": _store.aware(record.updated_at),
        "TrainingJobStatusCounters": _status_counters(rows),
        "ObjectiveStatusCounters": _objective_counters(rows),
        "Driver": _driver(record),
    }
    if "WarmStartConfig" in request:
        description["WarmStartConfig"] = request["WarmStartConfig"]
    if record.ended_at is not None:
        description["HyperParameterTuningEndTime"] = _store.aware(record.ended_at)
    if record.failure_reason:
        description["FailureReason"] = record.failure_reason
    best = _best_row(record, rows)
    if best is not None:
        description["BestTrainingJob"] = _summary(record, best)
    return description


def list_tuning_jobs(
    settings: Settings | None = None,
    *,
    name_contains: str | None = None,
    status: str | None = None,
    max_results: int | None = None,
) -> list[dict[str, Any]]:
    """Summaries of tuning jobs, newest first (``HyperParameterTuningJobSummaries``)."""
    settings = settings or get_settings()
    summaries = []
    for record in _store.list_jobs(
        settings, name_contains=name_contains, status=status, limit=max_results
    ):
        rows = _store.trials(record.name, settings)
        summary: dict[str, Any] = {
            "HyperParameterTuningJobName": record.name,
            "HyperParameterTuningJobArn": arn(record.name),
            "HyperParameterTuningJobStatus": record.status,
            "Strategy": record.strategy,
            "CreationTime": _store.aware(record.created_at),
            "TrainingJobStatusCounters": _status_counters(rows),
            "ObjectiveStatusCounters": _objective_counters(rows),
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": record.max_jobs,
                "MaxParallelTrainingJobs": record.max_parallel,
            },
        }
        if record.ended_at is not None:
            summary["HyperParameterTuningEndTime"] = _store.aware(record.ended_at)
        summaries.append(summary)
    return summaries


def list_trials(
    name: str,
    settings: Settings | None = None,
    *,
    status: str | None = None,
    sort_by: str = "CreationTime",
    descending: bool = False,
) -> list[dict[str, Any]]:
    """The training jobs of a tuning job (``TrainingJobSummaries``), one per trial.

    Args:
        name: The tuning job.
        settings: Where the metadata store is.
        status: Keep only trials whose training job has this status.
        sort_by: ``CreationTime``, ``Name``, ``Status`` or ``FinalObjectiveMetricValue``.
        descending: Sort order.

    Raises:
        NotFoundError: No such tuning job.
        InvalidInputError: An unknown ``sort_by``.
    """
    settings = settings or get_settings()
    record = _store.get_job(name, settings)
    summaries = [
        _summary(record, row)
        for row in _store.trials(name, settings)
        if row.training_job_name is not None and (status is None or row.status == status)
    ]
    keys = {
        "CreationTime": lambda item: item["CreationTime"],
        "Name": lambda item: item["TrainingJobName"],
        "Status": lambda item: item["TrainingJobStatus"],
        "FinalObjectiveMetricValue": lambda item: item.get(
            "FinalHyperParameterTuningJobObjectiveMetric", {}
        ).get("Value", float("-inf")),
    }
    if sort_by not in keys:
        raise InvalidInputError(f"sort_by {sort_by!r} is not one of {', '.join(keys)}")
    return sorted(summaries, key=keys[sort_by], reverse=descending)


def stop_tuning_job(name: str, settings: Settings | None = None) -> None:
    """Stop a tuning job: no new trials, running trials stopped, then ``Stopped``.

    When no driver is alive to do it, the running trials are stopped here.

    Raises:
        NotFoundError: No such tuning job.
        ConflictError: The tuning job has already ended.
    """
    settings = settings or get_settings()
    record = _store.get_job(name, settings)
    if record.status in _store.TERMINAL:
        raise ConflictError(f"tuning job {name!r} has already ended ({record.status})")
    _store.set_status(
        name, "Stopping", settings, allowed_from=frozenset({"InProgress"}), stop_requested=True
    )
    _store.update_job(name, settings, stop_requested=True)
    if _any_worker_alive(record, _store.trials(name, settings)):
        return
    from bcd.tuning._backend import TrainingBackend

    backend = TrainingBackend(settings)
    for row in _store.trials(name, settings):
        if row.status not in _store.TRIAL_ACTIVE:
            continue
        if row.training_job_name and backend.exists(row.training_job_name):
            backend.stop(row.training_job_name)
        _store.finish_trial(name, row.slot, settings, status="Stopped", objective_status="Failed")
    _store.set_status(name, "Stopped", settings)


def resume_tuning_job(
    name: str, settings: Settings | None = None, *, worker: bool = False, detach: bool = True
) -> str:
    """Continue a tuning job whose driver died, or add a worker to a running one.

    Args:
        name: The tuning job.
        settings: Where the metadata store is.
        worker: Join as an extra worker alongside a live driver (another
            process or machine sharing the same database).
        detach: Start a detached process (True) or run here until done (False).

    Returns:
        ``"started"`` when detached, else the tuning job's status at the end.

    Raises:
        NotFoundError: No such tuning job.
        ConflictError: The job has ended, or (without ``worker``) its driver still runs.
    """
    from bcd.tuning._driver import drive

    settings = settings or get_settings()
    record = _store.get_job(name, settings)
    if record.status in _store.TERMINAL:
        raise ConflictError(f"tuning job {name!r} has ended ({record.status}); nothing to resume")
    alive = _driver_alive(record)
    if alive and not worker:
        raise ConflictError(
            f"tuning job {name!r} still has a live driver ({record.driver}); "
            "add --worker to run another worker beside it"
        )
    primary = not alive
    if detach:
        start_driver(name, settings, worker=not primary)
        return "started"
    return drive(name, settings, primary=primary)


def best_training_job(tuning_job_name: str, settings: Settings | None = None) -> str:
    """The name of the best completed training job of a tuning job.

    Args:
        tuning_job_name: The tuning job.
        settings: Where the metadata store is.

    Returns:
        The training job name (a model can be created from its artifact).

    Raises:
        NotFoundError: No such tuning job, or no trial has completed with an
            objective value yet.
    """
    settings = settings or get_settings()
    record = _store.get_job(tuning_job_name, settings)
    best = _best_row(record, _store.trials(tuning_job_name, settings))
    if best is None or best.training_job_name is None:
        raise NotFoundError(
            f"tuning job {tuning_job_name!r} has no completed trial with a value of "
            f"{record.objective_metric!r} yet ({record.status})"
        )
    return best.training_job_name


def driver_log(name: str, settings: Settings | None = None) -> Path:
    """Where the driver of tuning job ``name`` writes its log on this machine."""
    from bcd.tuning._process import DRIVER_LOG

    return tuning_dir(settings or get_settings(), name) / DRIVER_LOG


def _exists(name: str, settings: Settings) -> bool:
    try:
        _store.get_job(name, settings)
    except NotFoundError:
        return False
    return True


def _best_row(record: TuningJobRecord, rows: list[TuningTrialRecord]) -> TuningTrialRecord | None:
    candidates = [
        row
        for row in rows
        if row.status == "Completed"
        and row.objective_status == "Succeeded"
        and row.objective_value is not None
    ]
    if not candidates:
        return None
    sign = 1.0 if record.objective_type == "Maximize" else -1.0
    # Ties go to the earlier trial.
    return max(candidates, key=lambda row: (sign * float(row.objective_value or 0.0), -row.slot))


def _summary(record: TuningJobRecord, row: TuningTrialRecord) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "TrainingJobName": row.training_job_name,
        "TrainingJobArn": f"{_TRAINING_ARN_PREFIX}{row.training_job_name}",
        "TuningJobName": record.name,
        "TrialNumber": row.slot,
        "CreationTime": _store.aware(row.created_at),
        "TrainingStartTime": _store.aware(row.started_at),
        "TrainingEndTime": _store.aware(row.ended_at),
        # A claimed slot whose job is being created counts as in progress.
        "TrainingJobStatus": "InProgress" if row.status == "Pending" else row.status,
        "TunedHyperParameters": {key: str(value) for key, value in row.hyperparameters.items()},
        "ObjectiveStatus": row.objective_status,
        "Pruned": row.pruned,
    }
    if row.objective_value is not None:
        summary["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": record.objective_type,
            "MetricName": record.objective_metric,
            "Value": row.objective_value,
        }
    if row.failure_reason:
        summary["FailureReason"] = row.failure_reason
    return summary


def _status_counters(rows: list[TuningTrialRecord]) -> dict[str, int]:
    return {
        "Completed": sum(row.status == "Completed" for row in rows),
        "InProgress": sum(row.status in _store.TRIAL_ACTIVE for row in rows),
        "RetryableError": 0,
        "NonRetryableError": sum(row.status == "Failed" for row in rows),
        "Failed": sum(row.status == "Failed" for row in rows),
        "Stopped": sum(row.status == "Stopped" and not row.pruned for row in rows),
        "Pruned": sum(row.pruned for row in rows),
    }


def _objective_counters(rows: list[TuningTrialRecord]) -> dict[str, int]:
    return {
        "Succeeded": sum(row.objective_status == "Succeeded" for row in rows),
        "Pending": sum(row.objective_status == "Pending" for row in rows),
        "Failed": sum(row.objective_status == "Failed" for row in rows),
    }


def _driver(record: TuningJobRecord) -> dict[str, Any]:
    host, pid = None, None
    if record.driver:
        host, _, rest = record.driver.partition("/")
        pid = int(rest.partition("/")[0])
    return {
        "Host": host,
        "Pid": pid,
        "LastHeartbeat": _store.aware(record.driver_heartbeat),
        "Alive": _driver_alive(record),
    }


def _driver_alive(record: TuningJobRecord) -> bool:
    if record.driver is None:
        return False
    return worker_alive(record.driver, _store.aware(record.driver_heartbeat))


def _any_worker_alive(record: TuningJobRecord, rows: list[TuningTrialRecord]) -> bool:
    if _driver_alive(record):
        return True
    return any(
        worker_alive(row.worker, _store.aware(row.heartbeat))
        for row in rows
        if row.status in _store.TRIAL_ACTIVE
    )
