"""Metadata table of batch transform: one row per transform job."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bcd.db import Base, utcnow


class TransformJobRecord(Base):
    """A batch transform job: what it scores, with what, and how far it got.

    Results live in the job's output folder, one file per finished chunk;
    the row holds the request, the status and the counters. ``worker`` names
    the process running the job (``host:pid:start_time``), so a later call can
    tell an interrupted job from a live one.
    """

    __tablename__ = "transform_jobs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    input_uri: Mapped[str] = mapped_column(Text)
    output_path: Mapped[str] = mapped_column(Text)
    input_kind: Mapped[str] = mapped_column(String(16))
    executor: Mapped[str] = mapped_column(String(16))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    chunks_total: Mapped[int] = mapped_column(Integer, default=0)
    chunks_done: Mapped[int] = mapped_column(Integer, default=0)
    records_total: Mapped[int] = mapped_column(Integer, default=0)
    records_done: Mapped[int] = mapped_column(Integer, default=0)
    records_failed: Mapped[int] = mapped_column(Integer, default=0)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
