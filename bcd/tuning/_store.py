"""Reads and writes of tuning-job and trial records.

Each write is one short transaction. Trial slots are claimed with one
conditional UPDATE, which is atomic on SQLite and PostgreSQL alike, so any
number of worker processes (on any number of machines) sharing a tuning job
never start more than ``max_jobs`` trials, nor more than ``max_parallel`` at
once.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bcd.config import Settings
from bcd.db import session_scope, utcnow
from bcd.errors import ConflictError, NotFoundError
from bcd.tuning._tables import TuningJobRecord, TuningTrialRecord

TERMINAL = frozenset({"Completed", "Failed", "Stopped"})
TRIAL_ACTIVE = frozenset({"Pending", "InProgress", "Stopping"})


def insert_job(record: TuningJobRecord, settings: Settings) -> None:
    """Store a new tuning job.

    Raises:
        ConflictError: A tuning job with that name exists already.
    """
    try:
        with session_scope(settings) as session:
            session.add(record)
    except IntegrityError:
        raise ConflictError(
            f"tuning job {record.name!r} already exists; choose another name"
        ) from None


def get_job(name: str, settings: Settings) -> TuningJobRecord:
    """The record of tuning job ``name``.

    Raises:
        NotFoundError: No such tuning job.
    """
    with session_scope(settings) as session:
        record = session.get(TuningJobRecord, name)
        if record is None:
            raise NotFoundError(
                f"tuning job {name!r} does not exist; `bcd tuning-jobs list` shows the tuning jobs"
            )
        session.expunge(record)
        return record


def list_jobs(
    settings: Settings,
    *,
    name_contains: str | None = None,
    status: str | None = None,
    limit: int | None = None,
) -> list[TuningJobRecord]:
    """Tuning-job records, newest first."""
    query = select(TuningJobRecord).order_by(TuningJobRecord.created_at.desc())
    if name_contains:
        query = query.where(TuningJobRecord.name.contains(name_contains, autoescape=True))
    if status:
        query = query.where(TuningJobRecord.status == status)
    if limit is not None:
        query = query.limit(limit)
    with session_scope(settings) as session:
        rows = session.scalars(query).all()
        session.expunge_all()
        return list(rows)


def update_job(name: str, settings: Settings, **fields: Any) -> None:
    """Set plain fields of a tuning-job record."""
    with session_scope(settings) as session:
        session.execute(
            update(TuningJobRecord)
            .where(TuningJobRecord.name == name)
            .values(updated_at=utcnow(), **fields)
        )


def set_status(
    name: str,
    status: str,
    settings: Settings,
    *,
    allowed_from: frozenset[str] = frozenset({"InProgress", "Stopping"}),
    **fields: Any,
) -> bool:
    """Move a tuning job to ``status`` if it is in one of ``allowed_from``.

    Returns:
        Whether the change was applied (the first writer to end a job wins).
    """
    values: dict[str, Any] = {"status": status, "updated_at": utcnow(), **fields}
    if status in TERMINAL:
        values.setdefault("ended_at", utcnow())
    with session_scope(settings) as session:
        result = session.execute(
            update(TuningJobRecord)
            .where(TuningJobRecord.name == name, TuningJobRecord.status.in_(allowed_from))
            .values(**values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def claim_slot(name: str, worker: str, settings: Settings) -> int | None:
    """Claim the next trial slot of a tuning job, if the limits allow one now.

    Returns:
        The slot number (1-based launch order), or None when the job has
        launched all its trials, has ``max_parallel`` trials running, is
        stopping, or has ended.
    """
    with session_scope(settings) as session:
        result = session.execute(
            update(TuningJobRecord)
            .where(
                TuningJobRecord.name == name,
                TuningJobRecord.status == "InProgress",
                TuningJobRecord.stop_requested.is_(False),
                TuningJobRecord.launched < TuningJobRecord.max_jobs,
                TuningJobRecord.launched - TuningJobRecord.finished < TuningJobRecord.max_parallel,
            )
            .values(launched=TuningJobRecord.launched + 1, updated_at=utcnow())
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return None
        slot = session.scalar(select(TuningJobRecord.launched).where(TuningJobRecord.name == name))
        assert slot is not None
        session.add(
            TuningTrialRecord(
                tuning_job_name=name,
                slot=slot,
                status="Pending",
                pruned=False,
                hyperparameters={},
                objective_status="Pending",
                intermediate_steps=0,
                worker=worker,
            )
        )
        return int(slot)


def release_slot(name: str, slot: int, settings: Settings) -> None:
    """Give back a claimed slot whose trial never started (its row is deleted)."""
    with session_scope(settings) as session:
        deleted = session.execute(
            delete(TuningTrialRecord).where(
                TuningTrialRecord.tuning_job_name == name,
                TuningTrialRecord.slot == slot,
                TuningTrialRecord.status == "Pending",
            )
        )
        if deleted.rowcount:  # type: ignore[attr-defined]
            session.execute(
                update(TuningJobRecord)
                .where(TuningJobRecord.name == name)
                .values(launched=TuningJobRecord.launched - 1, updated_at=utcnow())
            )


def update_trial(name: str, slot: int, settings: Settings, **fields: Any) -> None:
    """Set fields of one trial."""
    with session_scope(settings) as session:
        session.execute(
            update(TuningTrialRecord)
            .where(TuningTrialRecord.tuning_job_name == name, TuningTrialRecord.slot == slot)
            .values(**fields)
        )


def finish_trial(name: str, slot: int, settings: Settings, **fields: Any) -> bool:
    """Record a trial's end and count it finished, once.

    Returns:
        Whether this call ended the trial (False if it had ended already).
    """
    with session_scope(settings) as session:
        result = session.execute(
            update(TuningTrialRecord)
            .where(
                TuningTrialRecord.tuning_job_name == name,
                TuningTrialRecord.slot == slot,
                TuningTrialRecord.status.in_(TRIAL_ACTIVE),
            )
            .values(ended_at=utcnow(), heartbeat=utcnow(), **fields)
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        session.execute(
            update(TuningJobRecord)
            .where(TuningJobRecord.name == name)
            .values(finished=TuningJobRecord.finished + 1, updated_at=utcnow())
        )
        return True


def trials(name: str, settings: Settings) -> list[TuningTrialRecord]:
    """Every trial of a tuning job, in launch order."""
    with session_scope(settings) as session:
        rows = session.scalars(
            select(TuningTrialRecord)
            .where(TuningTrialRecord.tuning_job_name == name)
            .order_by(TuningTrialRecord.slot)
        ).all()
        session.expunge_all()
        return list(rows)


def adopt_trial(name: str, slot: int, old_worker: str, new_worker: str, settings: Settings) -> bool:
    """Take over a trial from a worker that died; whether this worker got it."""
    with session_scope(settings) as session:
        result = session.execute(
            update(TuningTrialRecord)
            .where(
                TuningTrialRecord.tuning_job_name == name,
                TuningTrialRecord.slot == slot,
                TuningTrialRecord.worker == old_worker,
            )
            .values(worker=new_worker, heartbeat=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def beat(name: str, worker: str, settings: Settings, *, driver: bool) -> None:
    """Refresh the heartbeat of a worker's running trials (and of the driver)."""
    now = utcnow()
    with session_scope(settings) as session:
        session.execute(
            update(TuningTrialRecord)
            .where(
                TuningTrialRecord.tuning_job_name == name,
                TuningTrialRecord.worker == worker,
                TuningTrialRecord.status.in_(TRIAL_ACTIVE),
            )
            .values(heartbeat=now)
        )
        if driver:
            session.execute(
                update(TuningJobRecord)
                .where(TuningJobRecord.name == name)
                .values(driver_heartbeat=now)
            )


def aware(timestamp: dt.datetime | None) -> dt.datetime | None:
    """A stored timestamp as timezone-aware UTC (SQLite returns naive ones)."""
    if timestamp is None:
        return None
    return timestamp if timestamp.tzinfo else timestamp.replace(tzinfo=dt.UTC)
