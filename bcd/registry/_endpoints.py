"""Endpoint views: boto3-shaped descriptions, resolution for serving, invocation stats."""

from __future__ import annotations

import logging
import math
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bcd.config import Settings, get_settings
from bcd.db import get_engine, session_scope, utcnow
from bcd.errors import BcdError, InvalidInputError
from bcd.registry import _artifacts
from bcd.registry._lifecycle import (
    EndpointRow,
    VariantRow,
    load_endpoint,
    recover_if_orphaned,
    variant_rows,
)
from bcd.registry._lookup import arn, aware
from bcd.registry._tables import (
    EndpointRecord,
    ModelRecord,
    ProductionVariantRecord,
    VariantStatsRecord,
)
from bcd.registry._types import IN_SERVICE, UPDATING, ResolvedEndpoint, ResolvedVariant

logger = logging.getLogger(__name__)


def _variant_descriptions(
    session: Any, name: str, variants: list[VariantRow]
) -> list[dict[str, Any]]:
    stats = {
        row.variant_name: row
        for row in session.scalars(
            select(VariantStatsRecord).where(VariantStatsRecord.endpoint_name == name)
        )
    }
    described = []
    for variant in variants:
        counts = stats.get(variant.variant_name)
        invocations = counts.invocations if counts else 0
        described.append(
            {
                "VariantName": variant.variant_name,
                "ModelName": variant.model_name,
                "CurrentWeight": variant.weight,
                "DesiredWeight": variant.weight,
                "CurrentInstanceCount": variant.instance_count,
                "DesiredInstanceCount": variant.instance_count,
                "InvocationCount": invocations,
                "InvocationErrors": counts.errors if counts else 0,
                "AverageLatencyMs": (
                    counts.latency_ms_total / invocations if counts and invocations else None
                ),
            }
        )
    return described


def describe_endpoint(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """An endpoint in the shape of boto3's ``describe_endpoint``.

    Returns:
        ``EndpointName``, ``EndpointArn``, ``EndpointConfigName``,
        ``EndpointStatus``, ``FailureReason`` (when set), ``CreationTime``,
        ``LastModifiedTime``, ``Version``, ``ProductionVariants`` (with
        ``CurrentWeight``, ``CurrentInstanceCount``, ``InvocationCount``,
        ``InvocationErrors``, ``AverageLatencyMs``) and, while updating,
        ``PendingDeploymentSummary``.

    Raises:
        NotFoundError: No such endpoint (the message lists the existing ones).
    """
    settings = settings or get_settings()
    row, variants = load_endpoint(name, settings)
    with session_scope(settings) as session:
        description: dict[str, Any] = {
            "EndpointName": row.name,
            "EndpointArn": arn("endpoint", row.name),
            "EndpointConfigName": row.config_name,
            "EndpointStatus": row.status,
            "CreationTime": aware(row.created_at),
            "LastModifiedTime": aware(row.updated_at),
            "Version": row.version,
            "ProductionVariants": _variant_descriptions(session, row.name, variants),
        }
        if row.failure_reason:
            description["FailureReason"] = row.failure_reason
        if row.status == UPDATING and row.pending_config_name:
            pending = variant_rows(session, row.pending_config_name)
            description["PendingDeploymentSummary"] = {
                "EndpointConfigName": row.pending_config_name,
                "ProductionVariants": [
                    {
                        "VariantName": variant.variant_name,
                        "ModelName": variant.model_name,
                        "DesiredWeight": variant.weight,
                        "DesiredInstanceCount": variant.instance_count,
                    }
                    for variant in pending
                ],
            }
    return description


def endpoint_summaries(
    name_contains: str | None = None,
    status: str | None = None,
    settings: Settings | None = None,
) -> list[dict[str, Any]]:
    """Endpoint summaries like boto3's ``list_endpoints``, newest first."""
    with session_scope(settings) as session:
        query = select(EndpointRecord).order_by(
            EndpointRecord.created_at.desc(), EndpointRecord.name
        )
        if name_contains:
            query = query.where(EndpointRecord.name.contains(name_contains))
        if status:
            query = query.where(EndpointRecord.status == status)
        return [
            {
                "EndpointName": record.name,
                "EndpointArn": arn("endpoint", record.name),
                "EndpointConfigName": record.config_name,
                "EndpointStatus": record.status,
                "CreationTime": aware(record.created_at),
                "LastModifiedTime": aware(record.updated_at),
            }
            for record in session.scalars(query)
        ]


def _resolved(row: EndpointRow, variants: list[VariantRow], settings: Settings) -> ResolvedEndpoint:
    servable = row.status in (IN_SERVICE, UPDATING)
    resolved = []
    for variant in variants:
        if servable:
            model_dir = _artifacts.materialize(
                variant.model_name,
                variant.artifact_url,
                variant.onnx_file,
                variant.onnx_sha256,
                settings,
                verify=False,
            )
        else:
            model_dir = _artifacts.local_model_dir(
                variant.model_name, variant.artifact_url, settings
            )
        resolved.append(
            ResolvedVariant(
                variant.variant_name,
                variant.model_name,
                model_dir,
                variant.instance_count,
                variant.weight,
                variant.onnx_sha256,
            )
        )
    return ResolvedEndpoint(
        row.name, row.status, row.config_name, row.version, resolved, row.failure_reason
    )


def _snapshots(
    settings: Settings, name: str | None = None
) -> list[tuple[EndpointRow, list[VariantRow]]]:
    """Endpoints with their variants and models in one query (servers poll this often).

    Plain Core on one connection: ORM sessions cost milliseconds each, and a
    router re-reads every endpoint every second or so.
    """
    endpoints = EndpointRecord.__table__
    variants = ProductionVariantRecord.__table__
    models = ModelRecord.__table__
    query = (
        select(
            endpoints.c.name,
            endpoints.c.status,
            endpoints.c.config_name,
            endpoints.c.pending_config_name,
            endpoints.c.failure_reason,
            endpoints.c.version,
            endpoints.c.operation_owner,
            endpoints.c.created_at,
            endpoints.c.updated_at,
            variants.c.variant_name,
            variants.c.model_name,
            variants.c.instance_count,
            variants.c.weight,
            models.c.artifact_url,
            models.c.model_json,
            models.c.onnx_sha256,
        )
        .select_from(
            endpoints.outerjoin(
                variants, variants.c.config_name == endpoints.c.config_name
            ).outerjoin(models, models.c.name == variants.c.model_name)
        )
        .order_by(endpoints.c.name, variants.c.position)
    )
    if name is not None:
        query = query.where(endpoints.c.name == name)
    grouped: dict[str, tuple[EndpointRow, list[VariantRow]]] = {}
    with get_engine(settings).connect() as connection:
        for record in connection.execute(query):
            if record.name not in grouped:
                grouped[record.name] = (EndpointRow(*record[:9]), [])
            if record.variant_name is not None:
                grouped[record.name][1].append(
                    VariantRow(
                        record.variant_name,
                        record.model_name,
                        record.instance_count,
                        record.weight,
                        record.artifact_url,
                        record.model_json["onnx"]["file"],
                        record.onnx_sha256,
                    )
                )
    return list(grouped.values())


def resolve_endpoint(name: str, settings: Settings | None = None) -> ResolvedEndpoint:
    """An endpoint with each variant's local model folder, for the serving runtime.

    Args:
        name: The endpoint's name.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        The endpoint's status, current config, version and variants. When it
        is ``InService`` or ``Updating`` every ``model_dir`` is present
        (downloaded to the local cache if this machine lacked it).

    Raises:
        NotFoundError: No such endpoint (the message lists the existing ones),
            or its artifacts have vanished.
    """
    settings = settings or get_settings()
    snapshot = _snapshots(settings, name)
    if not snapshot or recover_if_orphaned(snapshot[0][0], settings):
        # load_endpoint raises NotFoundError listing the endpoints, or re-reads.
        row, variants = load_endpoint(name, settings)
    else:
        row, variants = snapshot[0]
    return _resolved(row, variants, settings)


def list_endpoints(settings: Settings | None = None) -> list[ResolvedEndpoint]:
    """Every endpoint, resolved like :func:`resolve_endpoint`, sorted by name.

    An endpoint whose artifacts cannot be made present on this machine is
    left out with a warning in the log, so one broken endpoint does not hide
    the others.
    """
    settings = settings or get_settings()
    endpoints = []
    for row, variants in _snapshots(settings):
        try:
            if recover_if_orphaned(row, settings):
                row, variants = load_endpoint(row.name, settings)
            endpoints.append(_resolved(row, variants, settings))
        except BcdError as exc:
            logger.warning("endpoint %s is left out: %s", row.name, exc)
    return endpoints


def record_invocations(
    endpoint: str,
    variant: str,
    count: int,
    latency_ms_total: float,
    errors: int = 0,
    settings: Settings | None = None,
) -> None:
    """Add invocation counters to a variant's stats (servers call this every few seconds).

    Args:
        endpoint: The endpoint's name. Counters for an endpoint that no longer
            exists are dropped (it was deleted while the server held them).
        variant: The variant's name.
        count: Invocations since the last call (errored ones included).
        latency_ms_total: Sum of their latencies in milliseconds.
        errors: How many of them failed.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Raises:
        InvalidInputError: Negative or non-finite numbers, or errors > count.
    """
    for label, value in (("count", count), ("errors", errors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"{label} must be a non-negative integer, not {value!r}")
    if not isinstance(latency_ms_total, int | float) or not (
        math.isfinite(latency_ms_total) and latency_ms_total >= 0
    ):
        raise InvalidInputError(
            f"latency_ms_total must be a non-negative number, not {latency_ms_total!r}"
        )
    if errors > count:
        raise InvalidInputError(f"errors ({errors}) cannot exceed count ({count})")
    if count == 0:
        return
    for attempt in range(2):
        try:
            with session_scope(settings) as session:
                if session.get(EndpointRecord, endpoint) is None:
                    logger.debug("dropping stats of deleted endpoint %s", endpoint)
                    return
                result = session.execute(
                    update(VariantStatsRecord)
                    .where(
                        VariantStatsRecord.endpoint_name == endpoint,
                        VariantStatsRecord.variant_name == variant,
                    )
                    .values(
                        invocations=VariantStatsRecord.invocations + count,
                        errors=VariantStatsRecord.errors + errors,
                        latency_ms_total=VariantStatsRecord.latency_ms_total
                        + float(latency_ms_total),
                        updated_at=utcnow(),
                    )
                )
                if result.rowcount == 0:  # type: ignore[attr-defined]
                    session.add(
                        VariantStatsRecord(
                            endpoint_name=endpoint,
                            variant_name=variant,
                            invocations=count,
                            errors=errors,
                            latency_ms_total=float(latency_ms_total),
                        )
                    )
            return
        except IntegrityError:
            # Another server inserted the row first, or the endpoint was
            # deleted meanwhile; the retry updates the row or drops the counts.
            if attempt:
                raise
