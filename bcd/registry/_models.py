"""Models: a name bound to a validated artifact folder (``model.onnx`` + ``model.json``)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from sqlalchemy import select

from bcd.config import Settings, get_settings
from bcd.db import session_scope
from bcd.errors import ConflictError, InvalidInputError, NotFoundError
from bcd.names import validate_name
from bcd.registry import _artifacts
from bcd.registry._lookup import arn, aware, not_found
from bcd.registry._tables import ModelRecord, ProductionVariantRecord

logger = logging.getLogger(__name__)

SOURCE_PATH = "path"
SOURCE_TRAINING_JOB = "training-job"
SOURCE_TUNING_JOB = "tuning-job"
SOURCE_BUNDLED = "bundled"


def training_job_artifact(job_name: str, settings: Settings) -> str:
    """The model folder URL of a completed training job (its ``ModelArtifacts``).

    Raises:
        NotFoundError: No such job.
        ConflictError: The job has not completed, so it has no model yet.
    """
    try:
        from bcd.jobs import describe_training_job
    except ImportError as exc:
        raise NotFoundError(
            "training jobs are not available in this installation; "
            "create the model from an artifact folder instead"
        ) from exc
    job = describe_training_job(job_name, settings=settings)
    status = job.get("TrainingJobStatus")
    if status != "Completed":
        reason = f" ({job['FailureReason']})" if job.get("FailureReason") else ""
        raise ConflictError(
            f"training job {job_name!r} is {status}{reason}; only a Completed job has a "
            "model to register — wait for it (bcd jobs describe) or pick another job"
        )
    url = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
    if not url:
        raise NotFoundError(f"training job {job_name!r} recorded no model artifacts")
    return str(url)


def tuning_job_best_training_job(tuning_job_name: str, settings: Settings) -> str:
    """The name of the best training job of a hyperparameter tuning job."""
    try:
        from bcd.tuning import best_training_job
    except ImportError as exc:
        raise NotFoundError(
            "tuning jobs are not available in this installation; "
            "create the model from a training job or an artifact folder instead"
        ) from exc
    best: Any = best_training_job(tuning_job_name, settings=settings)
    if isinstance(best, dict):
        best = best.get("TrainingJobName")
    if not best:
        raise ConflictError(
            f"tuning job {tuning_job_name!r} has no completed training job yet; wait for it"
        )
    return str(best)


def create_model(
    name: str,
    *,
    model_data: str | None = None,
    training_job: str | None = None,
    tuning_job: str | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Register a model from exactly one source.

    Args:
        name: The model's name (unique, 1–63 chars of ``[a-zA-Z0-9-]``).
        model_data: A local folder or fsspec URL holding ``model.onnx`` + ``model.json``.
        training_job: A completed training job whose model artifacts to use.
        tuning_job: A tuning job whose best training job's artifacts to use.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        ``{"ModelName", "ModelArn"}``.

    Raises:
        InvalidInputError: Bad name, not exactly one source, or a malformed ``model.json``.
        NotFoundError: The source or its artifacts do not exist.
        ConflictError: A model with that name exists, or the job has not completed.
    """
    settings = settings or get_settings()
    validate_name(name, "model name")
    sources = {
        "model_data": model_data,
        "training_job": training_job,
        "tuning_job": tuning_job,
    }
    given = [key for key, value in sources.items() if value]
    if len(given) != 1:
        raise InvalidInputError(
            "give exactly one model source: model_data (an artifact folder or URL), "
            f"training_job or tuning_job; got {', '.join(given) or 'none'}"
        )
    _ensure_absent(name, settings)
    if tuning_job:
        source_type, source_name = SOURCE_TUNING_JOB, tuning_job
        job_name = tuning_job_best_training_job(tuning_job, settings)
        url = training_job_artifact(job_name, settings)
    elif training_job:
        source_type, source_name = SOURCE_TRAINING_JOB, training_job
        url = training_job_artifact(training_job, settings)
    else:
        source_type, source_name = SOURCE_PATH, None
        url = str(model_data)
    return register_artifact(name, url, source_type, source_name, settings)


def register_artifact(
    name: str, url: str, source_type: str, source_name: str | None, settings: Settings
) -> dict[str, Any]:
    """Validate an artifact folder and store the model record (used by the bundled model too)."""
    info = _artifacts.inspect_artifact(url, settings)
    with session_scope(settings) as session:
        if session.get(ModelRecord, name) is not None:
            raise ConflictError(_exists_message(name))
        session.add(
            ModelRecord(
                name=name,
                artifact_url=info.url,
                source_type=source_type,
                source_name=source_name,
                model_json=info.model_json,
                onnx_sha256=info.onnx_sha256,
                onnx_bytes=info.onnx_bytes,
            )
        )
    logger.info("created model %s from %s", name, info.url)
    return {"ModelName": name, "ModelArn": arn("model", name)}


def _exists_message(name: str) -> str:
    return (
        f"a model named {name!r} exists already; pick another name or delete it first "
        f"(bcd models delete {name})"
    )


def _ensure_absent(name: str, settings: Settings) -> None:
    with session_scope(settings) as session:
        if session.get(ModelRecord, name) is not None:
            raise ConflictError(_exists_message(name))


def get_model_record(session: Any, name: str) -> ModelRecord:
    """The model record, or a NotFoundError listing the models that exist."""
    record = session.get(ModelRecord, name)
    if record is None:
        existing = session.scalars(select(ModelRecord.name)).all()
        raise not_found("model", name, existing, "bcd models create")
    return record  # type: ignore[no-any-return]


def describe_model(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """A model's record in the shape of boto3's ``describe_model``.

    Returns:
        ``ModelName``, ``ModelArn``, ``PrimaryContainer`` (``ModelDataUrl``),
        ``CreationTime``, ``ModelSource``, ``ModelMetadata`` (the stored
        ``model.json``) and ``OnnxSha256``.

    Raises:
        NotFoundError: No such model (the message lists the existing ones).
    """
    with session_scope(settings) as session:
        record = get_model_record(session, name)
        return _describe(record)


def _describe(record: ModelRecord) -> dict[str, Any]:
    source: dict[str, Any] = {"Type": record.source_type}
    if record.source_type == SOURCE_TRAINING_JOB:
        source["TrainingJobName"] = record.source_name
    elif record.source_type == SOURCE_TUNING_JOB:
        source["HyperParameterTuningJobName"] = record.source_name
    return {
        "ModelName": record.name,
        "ModelArn": arn("model", record.name),
        "PrimaryContainer": {"ModelDataUrl": record.artifact_url},
        "CreationTime": aware(record.created_at),
        "ModelSource": source,
        "ModelMetadata": record.model_json,
        "OnnxSha256": record.onnx_sha256,
        "OnnxBytes": record.onnx_bytes,
    }


def list_models(
    name_contains: str | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Model summaries (``ModelName``, ``ModelArn``, ``CreationTime``), newest first."""
    with session_scope(settings) as session:
        query = select(ModelRecord).order_by(ModelRecord.created_at.desc(), ModelRecord.name)
        if name_contains:
            query = query.where(ModelRecord.name.contains(name_contains))
        return [
            {
                "ModelName": record.name,
                "ModelArn": arn("model", record.name),
                "CreationTime": aware(record.created_at),
            }
            for record in session.scalars(query)
        ]


def delete_model(name: str, settings: Settings | None = None) -> None:
    """Delete a model record and its local cache (the artifact folder itself stays).

    Raises:
        NotFoundError: No such model.
        ConflictError: An endpoint config still uses it (the message names them).
    """
    settings = settings or get_settings()
    with session_scope(settings) as session:
        record = get_model_record(session, name)
        users = sorted(
            set(
                session.scalars(
                    select(ProductionVariantRecord.config_name).where(
                        ProductionVariantRecord.model_name == name
                    )
                )
            )
        )
        if users:
            raise ConflictError(
                f"model {name!r} is used by endpoint config(s) {', '.join(users)}; "
                "delete those configs first (bcd endpoint-configs delete NAME)"
            )
        session.delete(record)
    shutil.rmtree(_artifacts.cache_dir(name, settings), ignore_errors=True)
    logger.info("deleted model %s", name)
