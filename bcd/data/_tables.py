"""Metadata tables of the data layer."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from bcd.db import Base, utcnow


class DatasetRecord(Base):
    """An imported dataset: where its packed data lives and what it holds.

    ``location`` points at the committed import folder and ``split_location`` at
    the committed split folder; both change only in one transaction, which is
    what makes an import or a re-split visible all at once.
    """

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True, index=True)
    location: Mapped[str] = mapped_column(String(2048))
    split_location: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    fingerprint: Mapped[str] = mapped_column(String(80))
    source: Mapped[str] = mapped_column(String(2048))
    num_patches: Mapped[int] = mapped_column(Integer)
    num_patients: Mapped[int] = mapped_column(Integer)
    num_padded: Mapped[int] = mapped_column(Integer)
    num_rejected: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    splits: Mapped[dict[str, Any]] = mapped_column(JSON)
    split_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
