"""Registry tables: models, endpoint configs and variants, endpoints, stats, API keys.

The schema itself comes from migration ``0004_registry``; these declarations
must match it (``tests/db/test_migrations.py`` checks).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from bcd.db import Base, utcnow


class ModelRecord(Base):
    """A registered model: where its artifact folder lives and what it holds."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    artifact_url: Mapped[str] = mapped_column(Text)
    source_type: Mapped[str] = mapped_column(String(32))
    source_name: Mapped[str | None] = mapped_column(String(63), nullable=True)
    model_json: Mapped[dict] = mapped_column()
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    onnx_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EndpointConfigRecord(Base):
    """An endpoint config: a named, immutable list of production variants."""

    __tablename__ = "endpoint_configs"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ProductionVariantRecord(Base):
    """One production variant of an endpoint config."""

    __tablename__ = "production_variants"
    __table_args__ = (UniqueConstraint("config_name", "variant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    config_name: Mapped[str] = mapped_column(
        String(63), ForeignKey("endpoint_configs.name", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    variant_name: Mapped[str] = mapped_column(String(63))
    model_name: Mapped[str] = mapped_column(String(63), ForeignKey("models.name"), index=True)
    instance_count: Mapped[int] = mapped_column(Integer)
    weight: Mapped[float] = mapped_column(Float)


class EndpointRecord(Base):
    """An endpoint: the config taking traffic, its status and version."""

    __tablename__ = "endpoints"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    config_name: Mapped[str] = mapped_column(
        String(63), ForeignKey("endpoint_configs.name"), index=True
    )
    pending_config_name: Mapped[str | None] = mapped_column(
        String(63), ForeignKey("endpoint_configs.name"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16))
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)
    operation_owner: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class VariantStatsRecord(Base):
    """Invocation counters of one variant of one endpoint, accumulated by servers."""

    __tablename__ = "endpoint_variant_stats"

    endpoint_name: Mapped[str] = mapped_column(
        String(63), ForeignKey("endpoints.name", ondelete="CASCADE"), primary_key=True
    )
    variant_name: Mapped[str] = mapped_column(String(63), primary_key=True)
    invocations: Mapped[int] = mapped_column(BigInteger, default=0)
    errors: Mapped[int] = mapped_column(BigInteger, default=0)
    latency_ms_total: Mapped[float] = mapped_column(Float, default=0.0)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ApiKeyRecord(Base):
    """An API key: its public id, a salted hash of its secret, and its state."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    algorithm: Mapped[str] = mapped_column(String(64))
    salt_hex: Mapped[str] = mapped_column(String(64))
    hash_hex: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(nullable=True)
