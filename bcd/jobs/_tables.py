"""Tables of the training-job engine: jobs, their status events and metric series."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bcd.db import Base, utcnow


class TrainingJobRecord(Base):
    """One training job: what was asked for, where it runs, and how it ended.

    ``spec`` holds the validated request (algorithm, hyperparameters, channels,
    resources, stopping condition, checkpoint config) so the supervisor process
    can run the job from the record alone.
    """

    __tablename__ = "training_jobs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    tags: Mapped[list[Any]] = mapped_column(JSON)
    tuning_job_name: Mapped[str | None] = mapped_column(String(63), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    secondary_status: Mapped[str] = mapped_column(String(32))
    failure_reason: Mapped[str | None] = mapped_column(Text)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    workdir: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    supervisor_pid: Mapped[int | None] = mapped_column(Integer)
    supervisor_start: Mapped[float | None] = mapped_column(Float)
    model_artifact: Mapped[str | None] = mapped_column(Text)
    checkpoint_uri: Mapped[str | None] = mapped_column(Text)
    final_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    training_start: Mapped[dt.datetime | None]
    training_end: Mapped[dt.datetime | None]
    last_modified: Mapped[dt.datetime] = mapped_column(default=utcnow)
    billable_seconds: Mapped[int | None] = mapped_column(Integer)


class TrainingJobEvent(Base):
    """A secondary status transition (Starting, Downloading, Training, …) of a job."""

    __tablename__ = "training_job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(
        String(63), ForeignKey("training_jobs.name", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    start_time: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TrainingJobMetric(Base):
    """One point of a metric time series.

    ``source`` is ``"algorithm"`` (scraped from the log by a metric definition)
    or ``"instance"`` (CPU, memory, disk, GPU sampled by the supervisor).
    ``step`` counts the points of one series from 0; ``epoch`` is set when the
    log line names it (``epoch=<e>``).
    """

    __tablename__ = "training_job_metrics"
    __table_args__ = (Index("ix_training_job_metrics_series", "job_name", "metric_name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_name: Mapped[str] = mapped_column(
        String(63), ForeignKey("training_jobs.name", ondelete="CASCADE")
    )
    source: Mapped[str] = mapped_column(String(16))
    metric_name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer)
    timestamp: Mapped[dt.datetime] = mapped_column(default=utcnow)
