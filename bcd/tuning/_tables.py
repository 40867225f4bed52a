"""Tables of the tuning layer: tuning jobs and their trials.

The Optuna study holds the optimiser's state; these tables hold what bcd
reports (status, counts, the training job of each trial, its objective) so
that describing a tuning job never needs Optuna.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from bcd.db import Base, utcnow


class TuningJobRecord(Base):
    """One hyperparameter tuning job.

    ``driver`` names the primary worker (``host/pid/start-time``).
    ``launched`` and ``finished`` count trial slots; workers claim a slot with
    one conditional UPDATE, so several processes (or machines) sharing the
    job never exceed ``max_jobs`` trials or ``max_parallel`` at once.
    """

    __tablename__ = "tuning_jobs"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    strategy: Mapped[str] = mapped_column(String(16))
    objective_metric: Mapped[str] = mapped_column(String(255))
    objective_type: Mapped[str] = mapped_column(String(16))
    max_jobs: Mapped[int] = mapped_column(Integer)
    max_parallel: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    study_name: Mapped[str] = mapped_column(String(64))
    launched: Mapped[int] = mapped_column(Integer, default=0)
    finished: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    driver: Mapped[str | None] = mapped_column(String(255), nullable=True)
    driver_heartbeat: Mapped[dt.datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class TuningTrialRecord(Base):
    """One trial of a tuning job: a slot, its Optuna trial and its training job.

    ``status`` is ``Pending`` (slot claimed, no training job yet), then the
    training job's status; ``pruned`` marks trials stopped by early stopping.
    """

    __tablename__ = "tuning_trials"
    __table_args__ = (UniqueConstraint("tuning_job_name", "slot"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tuning_job_name: Mapped[str] = mapped_column(
        String(32), ForeignKey("tuning_jobs.name", ondelete="CASCADE"), index=True
    )
    slot: Mapped[int] = mapped_column(Integer)
    optuna_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    training_job_name: Mapped[str | None] = mapped_column(String(63), nullable=True, unique=True)
    status: Mapped[str] = mapped_column(String(16))
    pruned: Mapped[bool] = mapped_column(Boolean, default=False)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    objective_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    objective_status: Mapped[str] = mapped_column(String(16), default="Pending")
    intermediate_steps: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str] = mapped_column(String(255))
    heartbeat: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
