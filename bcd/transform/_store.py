"""Reads and writes of transform job records, each its own short transaction.

Counters move by ``UPDATE … SET n = n + k`` so a runner and a reader never
lose a write, on SQLite and PostgreSQL alike. :func:`finish` never moves a job
out of a terminal status: the first writer to end a job wins.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bcd._process import is_alive, process_start_time
from bcd.config import Settings
from bcd.db import session_scope, utcnow
from bcd.errors import ConflictError, NotFoundError
from bcd.transform._tables import TransformJobRecord

IN_PROGRESS, STOPPING = "InProgress", "Stopping"
COMPLETED, FAILED, STOPPED = "Completed", "Failed", "Stopped"
TERMINAL = frozenset({COMPLETED, FAILED, STOPPED})
ACTIVE = frozenset({IN_PROGRESS, STOPPING})


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start_time`` of a process (default: this one)."""
    pid = os.getpid() if pid is None else pid
    started = process_start_time(pid) or 0.0
    return f"{socket.gethostname()}:{pid}:{started:.0f}"[:128]


def worker_alive(worker: str | None) -> bool:
    """Whether the process named by ``worker`` still runs (another host's: assumed so)."""
    if not worker:
        return False
    try:
        host, pid, started = worker.rsplit(":", 2)
        if host != socket.gethostname()[: len(host)]:
            return True
        return is_alive(int(pid), float(started))
    except ValueError:
        return False


def insert(record: TransformJobRecord, settings: Settings) -> None:
    """Store a new job.

    Raises:
        ConflictError: A job with that name exists.
    """
    try:
        with session_scope(settings) as session:
            session.add(record)
    except IntegrityError:
        raise ConflictError(
            f"transform job {record.name!r} already exists; choose another name "
            f"or `bcd transform resume {record.name}`"
        ) from None


def get(name: str, settings: Settings) -> TransformJobRecord:
    """The record of job ``name``.

    Raises:
        NotFoundError: No such job.
    """
    with session_scope(settings) as session:
        record = session.get(TransformJobRecord, name)
        if record is None:
            raise NotFoundError(
                f"transform job {name!r} does not exist; `bcd transform list` shows the jobs"
            )
        session.expunge(record)
        return record


def status(name: str, settings: Settings) -> str | None:
    """The job's status (``None`` when it was never recorded)."""
    with session_scope(settings) as session:
        return session.scalar(
            select(TransformJobRecord.status).where(TransformJobRecord.name == name)
        )


def set_fields(name: str, settings: Settings, **fields: Any) -> None:
    """Update columns of job ``name`` (and its ``updated_at``)."""
    with session_scope(settings) as session:
        session.execute(
            update(TransformJobRecord)
            .where(TransformJobRecord.name == name)
            .values(**fields, updated_at=utcnow())
        )


def mark_running(name: str, settings: Settings) -> None:
    """Record this process as the job's worker, and when it started."""
    now = utcnow()
    with session_scope(settings) as session:
        record = session.get(TransformJobRecord, name)
        if record is None:
            raise NotFoundError(f"transform job {name!r} does not exist")
        record.worker = process_identity()
        record.started_at = record.started_at or now
        record.updated_at = now


def set_progress(name: str, settings: Settings, **counters: Any) -> None:
    """Set the plan's totals and the counts of chunks already finished."""
    set_fields(name, settings, **counters)


def chunk_finished(name: str, settings: Settings, records: int, failed: int) -> None:
    """Count one more finished chunk of ``records`` records, ``failed`` of them failed."""
    set_fields(
        name,
        settings,
        chunks_done=TransformJobRecord.chunks_done + 1,
        records_done=TransformJobRecord.records_done + records,
        records_failed=TransformJobRecord.records_failed + failed,
    )


def finish(name: str, settings: Settings, final: str, reason: str | None = None) -> str:
    """End the job with ``final`` unless it has ended already; returns its status."""
    now = utcnow()
    with session_scope(settings) as session:
        result = session.execute(
            update(TransformJobRecord)
            .where(TransformJobRecord.name == name, TransformJobRecord.status.in_(ACTIVE))
            .values(status=final, failure_reason=reason, finished_at=now, updated_at=now)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            return final
        current = session.scalar(
            select(TransformJobRecord.status).where(TransformJobRecord.name == name)
        )
        return str(current)


def request_stop(name: str, settings: Settings) -> bool:
    """Move an ``InProgress`` job to ``Stopping``; whether it was running."""
    with session_scope(settings) as session:
        result = session.execute(
            update(TransformJobRecord)
            .where(TransformJobRecord.name == name, TransformJobRecord.status == IN_PROGRESS)
            .values(status=STOPPING, updated_at=utcnow())
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]


def restart(name: str, settings: Settings, worker: str | None) -> bool:
    """Move an ended or interrupted job back to ``InProgress``; whether it moved."""
    with session_scope(settings) as session:
        record = session.get(TransformJobRecord, name, with_for_update=True)
        if record is None:
            raise NotFoundError(f"transform job {name!r} does not exist")
        if record.status == COMPLETED or (record.status in ACTIVE and worker_alive(record.worker)):
            return False
        record.status = IN_PROGRESS
        record.failure_reason = None
        record.finished_at = None
        record.worker = worker
        record.updated_at = utcnow()
        return True


def list_records(
    settings: Settings,
    name_contains: str | None = None,
    status_equals: str | None = None,
    max_results: int | None = None,
) -> list[TransformJobRecord]:
    """Jobs, newest first."""
    query = select(TransformJobRecord).order_by(TransformJobRecord.created_at.desc())
    if name_contains:
        query = query.where(TransformJobRecord.name.contains(name_contains, autoescape=True))
    if status_equals:
        query = query.where(TransformJobRecord.status == status_equals)
    if max_results is not None:
        query = query.limit(max_results)
    with session_scope(settings) as session:
        rows = list(session.scalars(query).all())
        session.expunge_all()
        return rows


def mark_interrupted(settings: Settings, name: str | None = None) -> int:
    """End the active jobs whose process on this host is gone; returns how many.

    An ``InProgress`` job becomes ``Failed`` (resumable), a ``Stopping`` one ``Stopped``.
    """
    query = select(TransformJobRecord).where(TransformJobRecord.status.in_(ACTIVE))
    if name is not None:
        query = query.where(TransformJobRecord.name == name)
    marked = 0
    with session_scope(settings) as session:
        for record in session.scalars(query).all():
            if worker_alive(record.worker):
                continue
            now = utcnow()
            if record.status == STOPPING:
                record.status = STOPPED
            else:
                record.status = FAILED
                record.failure_reason = (
                    "InternalError: the transform process ended before the job finished "
                    f"(killed or crashed); `bcd transform resume {record.name}` continues "
                    "from the finished chunks"
                )
            record.finished_at = record.updated_at = now
            marked += 1
    return marked
