"""Metadata table of the slide layer: one row per slide analysis."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from bcd.db import Base, utcnow


class SlideAnalysisRecord(Base):
    """A slide uploaded for analysis, its progress and, once done, its report.

    The slide file and the outputs live under ``$BCD_HOME/slides/<id>/``; the
    row says where the analysis stands. ``worker`` names the process running
    it, so a restarted server can tell interrupted analyses from live ones.
    """

    __tablename__ = "slide_analyses"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    stage: Mapped[str] = mapped_column(String(32))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    endpoint_name: Mapped[str] = mapped_column(String(63))
    has_truth: Mapped[bool] = mapped_column(Boolean, default=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
