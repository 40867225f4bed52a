"""Reads and writes of job records, status events and metric series.

Every write is its own short transaction through :func:`bcd.db.session_scope`,
so several supervisors, a tuner and a CLI can write at once (SQLite WAL with a
busy timeout; PostgreSQL for many machines). Status changes go through
:func:`set_status`, which refuses to move a job out of a terminal status:
the first writer to end a job wins, and a record never flips afterwards.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from bcd.config import Settings
from bcd.db import session_scope, utcnow
from bcd.errors import ConflictError, NotFoundError
from bcd.jobs._tables import TrainingJobEvent, TrainingJobMetric, TrainingJobRecord

TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
ACTIVE = frozenset({"InProgress", "Stopping"})


@dataclass(frozen=True)
class MetricPoint:
    """One point of a metric series.

    Attributes:
        step: Index of the point in its series, from 0.
        value: The metric value.
        timestamp: When the supervisor saw it (UTC).
        epoch: The epoch named on the log line, if any.
    """

    step: int
    value: float
    timestamp: dt.datetime
    epoch: int | None


def insert_job(record: TrainingJobRecord, settings: Settings) -> None:
    """Store a new job record and its first event.

    Raises:
        ConflictError: A job with that name exists already.
    """
    try:
        with session_scope(settings) as session:
            session.add(record)
            session.flush()
            session.add(
                TrainingJobEvent(
                    job_name=record.name,
                    status=record.secondary_status,
                    message="Launching the training job",
                )
            )
    except IntegrityError:
        raise ConflictError(
            f"training job {record.name!r} already exists; choose another name"
        ) from None


def get_job(name: str, settings: Settings) -> TrainingJobRecord:
    """The record of job ``name``.

    Raises:
        NotFoundError: No such job.
    """
    with session_scope(settings) as session:
        record = session.get(TrainingJobRecord, name)
        if record is None:
            raise NotFoundError(
                f"training job {name!r} does not exist; `bcd jobs list` shows the jobs"
            )
        session.expunge(record)
        return record


def update_job(name: str, settings: Settings, **fields: Any) -> None:
    """Set plain fields (pid, artifact location, …) of a job record."""
    with session_scope(settings) as session:
        result = session.execute(
            update(TrainingJobRecord)
            .where(TrainingJobRecord.name == name)
            .values(last_modified=utcnow(), **fields)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFoundError(f"training job {name!r} does not exist")


def set_status(
    name: str,
    settings: Settings,
    *,
    secondary: str,
    message: str,
    status: str | None = None,
    allowed_from: Iterable[str] | None = None,
    **fields: Any,
) -> bool:
    """Record a secondary status transition, and optionally a new primary status.

    Args:
        name: The job.
        settings: Where the metadata store is.
        secondary: The secondary status (``Training``, ``Uploading``, …).
        message: A human-readable description of the transition.
        status: The new primary status, when it changes.
        allowed_from: Primary statuses the job may be in for this change;
            default: any non-terminal status.
        **fields: Other columns to set in the same transaction.

    Returns:
        Whether the change was applied (``False`` when the job had already
        moved on, e.g. it ended before a late stop request).
    """
    allowed = set(allowed_from) if allowed_from is not None else set(ACTIVE)
    now = utcnow()
    values: dict[str, Any] = {"secondary_status": secondary, "last_modified": now, **fields}
    if status is not None:
        values["status"] = status
    with session_scope(settings) as session:
        # One conditional UPDATE: atomic against a concurrent writer ending the job.
        result = session.execute(
            update(TrainingJobRecord)
            .where(TrainingJobRecord.name == name, TrainingJobRecord.status.in_(allowed))
            .values(**values)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            if session.get(TrainingJobRecord, name) is None:
                raise NotFoundError(f"training job {name!r} does not exist")
            return False
        session.add(
            TrainingJobEvent(job_name=name, status=secondary, message=message, start_time=now)
        )
    return True


def events(name: str, settings: Settings) -> list[TrainingJobEvent]:
    """The status transitions of a job, oldest first."""
    with session_scope(settings) as session:
        rows = session.scalars(
            select(TrainingJobEvent)
            .where(TrainingJobEvent.job_name == name)
            .order_by(TrainingJobEvent.id)
        ).all()
        session.expunge_all()
        return list(rows)


def list_jobs(
    settings: Settings,
    *,
    name_contains: str | None = None,
    status: str | None = None,
    tuning_job_name: str | None = None,
    created_after: dt.datetime | None = None,
    created_before: dt.datetime | None = None,
    sort_by: str = "CreationTime",
    descending: bool = True,
    offset: int = 0,
    limit: int | None = None,
) -> list[TrainingJobRecord]:
    """Job records matching the filters, sorted."""
    query = select(TrainingJobRecord)
    if name_contains:
        query = query.where(TrainingJobRecord.name.contains(name_contains, autoescape=True))
    if status:
        query = query.where(TrainingJobRecord.status == status)
    if tuning_job_name:
        query = query.where(TrainingJobRecord.tuning_job_name == tuning_job_name)
    if created_after is not None:
        query = query.where(TrainingJobRecord.created_at > created_after)
    if created_before is not None:
        query = query.where(TrainingJobRecord.created_at < created_before)
    column = {
        "CreationTime": TrainingJobRecord.created_at,
        "Name": TrainingJobRecord.name,
        "Status": TrainingJobRecord.status,
    }[sort_by]
    query = query.order_by(column.desc() if descending else column.asc(), TrainingJobRecord.name)
    query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    with session_scope(settings) as session:
        rows = session.scalars(query).all()
        session.expunge_all()
        return list(rows)


def active_jobs(settings: Settings, host: str) -> list[TrainingJobRecord]:
    """Jobs of ``host`` that are ``InProgress`` or ``Stopping``."""
    with session_scope(settings) as session:
        rows = session.scalars(
            select(TrainingJobRecord).where(
                TrainingJobRecord.status.in_(ACTIVE), TrainingJobRecord.host == host
            )
        ).all()
        session.expunge_all()
        return list(rows)


def add_metrics(
    name: str,
    points: Sequence[tuple[str, str, float, int, int | None, dt.datetime]],
    settings: Settings,
) -> None:
    """Append points ``(source, metric_name, value, step, epoch, timestamp)`` at once.

    The one writer of a job's series (its supervisor) numbers the steps.
    """
    if not points:
        return
    with session_scope(settings) as session:
        session.add_all(
            TrainingJobMetric(
                job_name=name,
                source=source,
                metric_name=metric,
                value=value,
                step=step,
                epoch=epoch,
                timestamp=timestamp,
            )
            for source, metric, value, step, epoch, timestamp in points
        )


def next_steps(name: str, settings: Settings) -> dict[str, int]:
    """For each series of a job, the step its next point gets."""
    with session_scope(settings) as session:
        rows = session.execute(
            select(TrainingJobMetric.metric_name, func.max(TrainingJobMetric.step))
            .where(TrainingJobMetric.job_name == name)
            .group_by(TrainingJobMetric.metric_name)
        ).all()
    return {metric: int(step) + 1 for metric, step in rows}


def metric_names(name: str, settings: Settings, source: str | None = None) -> list[str]:
    """Names of the metric series recorded for a job, sorted."""
    query = select(TrainingJobMetric.metric_name).where(TrainingJobMetric.job_name == name)
    if source:
        query = query.where(TrainingJobMetric.source == source)
    with session_scope(settings) as session:
        return sorted(set(session.scalars(query.distinct()).all()))


def metric_series(name: str, metric: str, settings: Settings) -> list[MetricPoint]:
    """All points of one series of a job, by step."""
    with session_scope(settings) as session:
        rows = session.execute(
            select(
                TrainingJobMetric.step,
                TrainingJobMetric.value,
                TrainingJobMetric.timestamp,
                TrainingJobMetric.epoch,
            )
            .where(TrainingJobMetric.job_name == name, TrainingJobMetric.metric_name == metric)
            .order_by(TrainingJobMetric.step)
        ).all()
    return [
        MetricPoint(step=step, value=value, timestamp=aware(timestamp), epoch=epoch)
        for step, value, timestamp, epoch in rows
    ]


def final_metrics(name: str, settings: Settings, source: str = "algorithm") -> dict[str, Any]:
    """The last value and time of every series of ``source`` for a job."""
    with session_scope(settings) as session:
        latest = (
            select(TrainingJobMetric.metric_name, func.max(TrainingJobMetric.step).label("step"))
            .where(TrainingJobMetric.job_name == name, TrainingJobMetric.source == source)
            .group_by(TrainingJobMetric.metric_name)
            .subquery()
        )
        rows = session.execute(
            select(
                TrainingJobMetric.metric_name, TrainingJobMetric.value, TrainingJobMetric.timestamp
            )
            .join(
                latest,
                (TrainingJobMetric.metric_name == latest.c.metric_name)
                & (TrainingJobMetric.step == latest.c.step),
            )
            .where(TrainingJobMetric.job_name == name)
        ).all()
    return {
        metric: {"value": value, "timestamp": aware(timestamp).isoformat()}
        for metric, value, timestamp in sorted(rows)
    }


def aware(timestamp: dt.datetime) -> dt.datetime:
    """``timestamp`` as timezone-aware UTC."""
    # SQLite hands back naive datetimes; every stored time is UTC.
    return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=dt.UTC)
