"""Endpoint configs: named, immutable lists of production variants."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, or_, select

from bcd.config import Settings
from bcd.db import session_scope
from bcd.errors import ConflictError, InvalidInputError
from bcd.names import validate_name
from bcd.registry._lookup import arn, aware, not_found
from bcd.registry._models import get_model_record
from bcd.registry._tables import EndpointConfigRecord, EndpointRecord, ProductionVariantRecord

logger = logging.getLogger(__name__)

MAX_VARIANTS = 10
MAX_INSTANCES = 64
_VARIANT_KEYS = {"VariantName", "ModelName", "InitialInstanceCount", "InitialVariantWeight"}
# SageMaker fields that mean nothing on one machine; accepted so notebooks port unchanged.
_IGNORED_KEYS = {"InstanceType", "AcceleratorType", "VolumeSizeInGB"}


def _validate_variant(index: int, variant: Any) -> dict[str, Any]:
    where = f"ProductionVariants[{index}]"
    if not isinstance(variant, dict):
        raise InvalidInputError(f"{where} must be an object with VariantName and ModelName")
    unknown = set(variant) - _VARIANT_KEYS - _IGNORED_KEYS
    if unknown:
        raise InvalidInputError(
            f"{where} has unknown field(s) {', '.join(sorted(unknown))}; "
            f"known fields: {', '.join(sorted(_VARIANT_KEYS))}"
        )
    for key in ("VariantName", "ModelName"):
        if key not in variant:
            raise InvalidInputError(f"{where} lacks {key}")
    validate_name(variant["VariantName"], f"{where}.VariantName")
    validate_name(variant["ModelName"], f"{where}.ModelName")
    count = variant.get("InitialInstanceCount", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_INSTANCES:
        raise InvalidInputError(
            f"{where}.InitialInstanceCount must be an integer from 1 to {MAX_INSTANCES}, "
            f"not {count!r}"
        )
    weight = variant.get("InitialVariantWeight", 1.0)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or weight < 0
    ):
        raise InvalidInputError(
            f"{where}.InitialVariantWeight must be a number of 0 or more, not {weight!r}"
        )
    return {
        "VariantName": variant["VariantName"],
        "ModelName": variant["ModelName"],
        "InitialInstanceCount": count,
        "InitialVariantWeight": float(weight),
    }


def validate_variants(variants: Any) -> list[dict[str, Any]]:
    """Check production variants (shape only; models are checked against the store).

    Returns:
        The variants with defaults filled in (1 instance, weight 1.0).

    Raises:
        InvalidInputError: Empty, too many, duplicate names, bad counts or weights
            (each weight 0 or more, at least one above 0).
    """
    if isinstance(variants, dict) or not isinstance(variants, Sequence) or not variants:
        raise InvalidInputError(
            "ProductionVariants must be a non-empty list of "
            "{VariantName, ModelName, InitialInstanceCount, InitialVariantWeight}"
        )
    if len(variants) > MAX_VARIANTS:
        raise InvalidInputError(
            f"an endpoint config holds at most {MAX_VARIANTS} variants, not {len(variants)}"
        )
    checked = [_validate_variant(index, variant) for index, variant in enumerate(variants)]
    seen: set[str] = set()
    for variant in checked:
        if variant["VariantName"] in seen:
            raise InvalidInputError(
                f"variant name {variant['VariantName']!r} appears twice; "
                "variant names must be unique within a config"
            )
        seen.add(variant["VariantName"])
    if not any(variant["InitialVariantWeight"] > 0 for variant in checked):
        # A weight of 0 keeps a variant for requests that pin it with X-Target-Variant;
        # the others need somewhere to go.
        raise InvalidInputError(
            "at least one variant needs an InitialVariantWeight above 0, or requests "
            "that do not pin a variant (X-Target-Variant) would have nowhere to go"
        )
    return checked


def create_endpoint_config(
    name: str, variants: Sequence[dict[str, Any]], settings: Settings | None = None
) -> dict[str, Any]:
    """Store an endpoint config.

    Args:
        name: The config's name (unique).
        variants: ``[{VariantName, ModelName, InitialInstanceCount, InitialVariantWeight}]``.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        ``{"EndpointConfigArn"}``.

    Raises:
        InvalidInputError: Bad name or variants.
        NotFoundError: A variant names a model that does not exist.
        ConflictError: A config with that name exists.
    """
    validate_name(name, "endpoint config name")
    checked = validate_variants(variants)
    with session_scope(settings) as session:
        if session.get(EndpointConfigRecord, name) is not None:
            raise ConflictError(
                f"an endpoint config named {name!r} exists already; configs are immutable, "
                "so create one under a new name and point the endpoint at it "
                "(bcd endpoints update)"
            )
        for variant in checked:
            get_model_record(session, variant["ModelName"])
        session.add(EndpointConfigRecord(name=name))
        session.flush()
        for position, variant in enumerate(checked):
            session.add(
                ProductionVariantRecord(
                    config_name=name,
                    position=position,
                    variant_name=variant["VariantName"],
                    model_name=variant["ModelName"],
                    instance_count=variant["InitialInstanceCount"],
                    weight=variant["InitialVariantWeight"],
                )
            )
    logger.info("created endpoint config %s with %d variant(s)", name, len(checked))
    return {"EndpointConfigArn": arn("endpoint-config", name)}


def get_config_record(session: Any, name: str) -> EndpointConfigRecord:
    """The config record, or a NotFoundError listing the configs that exist."""
    record = session.get(EndpointConfigRecord, name)
    if record is None:
        existing = session.scalars(select(EndpointConfigRecord.name)).all()
        raise not_found("endpoint config", name, existing, "bcd endpoint-configs create")
    return record  # type: ignore[no-any-return]


def config_variants(session: Any, name: str) -> list[ProductionVariantRecord]:
    """The variants of a config, in the order they were given."""
    query = (
        select(ProductionVariantRecord)
        .where(ProductionVariantRecord.config_name == name)
        .order_by(ProductionVariantRecord.position)
    )
    return list(session.scalars(query))


def describe_endpoint_config(name: str, settings: Settings | None = None) -> dict[str, Any]:
    """A config in the shape of boto3's ``describe_endpoint_config``.

    Raises:
        NotFoundError: No such config (the message lists the existing ones).
    """
    with session_scope(settings) as session:
        record = get_config_record(session, name)
        return {
            "EndpointConfigName": record.name,
            "EndpointConfigArn": arn("endpoint-config", record.name),
            "ProductionVariants": [
                {
                    "VariantName": variant.variant_name,
                    "ModelName": variant.model_name,
                    "InitialInstanceCount": variant.instance_count,
                    "InitialVariantWeight": variant.weight,
                }
                for variant in config_variants(session, name)
            ],
            "CreationTime": aware(record.created_at),
        }


def list_endpoint_configs(
    name_contains: str | None = None, settings: Settings | None = None
) -> list[dict[str, Any]]:
    """Config summaries (``EndpointConfigName``, ``EndpointConfigArn``, ``CreationTime``)."""
    with session_scope(settings) as session:
        query = select(EndpointConfigRecord).order_by(
            EndpointConfigRecord.created_at.desc(), EndpointConfigRecord.name
        )
        if name_contains:
            query = query.where(EndpointConfigRecord.name.contains(name_contains))
        return [
            {
                "EndpointConfigName": record.name,
                "EndpointConfigArn": arn("endpoint-config", record.name),
                "CreationTime": aware(record.created_at),
            }
            for record in session.scalars(query)
        ]


def delete_endpoint_config(name: str, settings: Settings | None = None) -> None:
    """Delete a config.

    Raises:
        NotFoundError: No such config.
        ConflictError: An endpoint runs it or is being updated to it.
    """
    with session_scope(settings) as session:
        record = get_config_record(session, name)
        users = session.scalars(
            select(EndpointRecord.name).where(
                or_(EndpointRecord.config_name == name, EndpointRecord.pending_config_name == name)
            )
        ).all()
        if users:
            raise ConflictError(
                f"endpoint config {name!r} is in use by endpoint(s) {', '.join(sorted(users))}; "
                "delete those endpoints or update them to another config first"
            )
        session.execute(
            delete(ProductionVariantRecord).where(ProductionVariantRecord.config_name == name)
        )
        session.delete(record)
    logger.info("deleted endpoint config %s", name)
