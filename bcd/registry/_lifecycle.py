"""Endpoint lifecycle: Creating → InService or Failed, Updating, Deleting.

All state lives in the metadata store, so endpoints survive a server restart.
Transitions are compare-and-set updates guarded by ``operation_owner``
(``host:pid`` of the process doing the work); a transition whose owner died on
this machine is finished by the next process that looks at the endpoint.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bcd.config import Settings, get_settings
from bcd.db import session_scope, utcnow
from bcd.errors import BcdError, ConflictError
from bcd.names import validate_name
from bcd.registry import _artifacts
from bcd.registry._configs import config_variants, get_config_record
from bcd.registry._lookup import arn, not_found
from bcd.registry._tables import EndpointRecord, ModelRecord, VariantStatsRecord
from bcd.registry._types import (
    CREATING,
    DELETING,
    FAILED,
    IN_SERVICE,
    UPDATING,
)

logger = logging.getLogger(__name__)

_TRANSITIONAL = (CREATING, UPDATING, DELETING)


@dataclass(frozen=True)
class VariantRow:
    variant_name: str
    model_name: str
    instance_count: int
    weight: float
    artifact_url: str
    onnx_file: str
    onnx_sha256: str


@dataclass(frozen=True)
class EndpointRow:
    name: str
    status: str
    config_name: str
    pending_config_name: str | None
    failure_reason: str | None
    version: int
    operation_owner: str | None
    created_at: Any
    updated_at: Any


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_is_dead(owner: str | None) -> bool:
    if not owner or ":" not in owner:
        return owner is None
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's work: it is not ours to judge
    import psutil

    pid = int(pid_text)
    return pid != os.getpid() and not psutil.pid_exists(pid)


def variant_rows(session: Any, config_name: str) -> list[VariantRow]:
    rows = []
    for variant in config_variants(session, config_name):
        model = session.get(ModelRecord, variant.model_name)
        rows.append(
            VariantRow(
                variant.variant_name,
                variant.model_name,
                variant.instance_count,
                variant.weight,
                model.artifact_url,
                model.model_json["onnx"]["file"],
                model.onnx_sha256,
            )
        )
    return rows


def _endpoint_row(record: EndpointRecord) -> EndpointRow:
    return EndpointRow(
        record.name,
        record.status,
        record.config_name,
        record.pending_config_name,
        record.failure_reason,
        record.version,
        record.operation_owner,
        record.created_at,
        record.updated_at,
    )


def get_endpoint_record(session: Any, name: str) -> EndpointRecord:
    record = session.get(EndpointRecord, name)
    if record is None:
        existing = session.scalars(select(EndpointRecord.name)).all()
        raise not_found("endpoint", name, existing, "bcd endpoints create")
    return record  # type: ignore[no-any-return]


def _transition(settings: Settings, name: str, owner: str | None, **values: Any) -> bool:
    """Set ``values`` on the endpoint if ``owner`` still holds it; True on success."""
    with session_scope(settings) as session:
        result = session.execute(
            update(EndpointRecord)
            .where(EndpointRecord.name == name, EndpointRecord.operation_owner == owner)
            .values(updated_at=utcnow(), **values)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def _provision(config_name: str, settings: Settings) -> str | None:
    """Make every variant's artifacts present locally; the failure reason, or None."""
    with session_scope(settings) as session:
        rows = variant_rows(session, config_name)
    problems = []
    for row in rows:
        try:
            _artifacts.materialize(
                row.model_name, row.artifact_url, row.onnx_file, row.onnx_sha256, settings
            )
        except BcdError as exc:
            problems.append(f"variant {row.variant_name} (model {row.model_name}): {exc}")
        except OSError as exc:
            problems.append(
                f"variant {row.variant_name} (model {row.model_name}): cannot fetch "
                f"{row.artifact_url}: {exc.strerror or exc}"
            )
        except Exception as exc:  # the endpoint must end Failed, never stuck Creating
            logger.exception("fetching the artifacts of model %s failed", row.model_name)
            problems.append(
                f"variant {row.variant_name} (model {row.model_name}): unexpected "
                f"{type(exc).__name__} while fetching {row.artifact_url}; see the server log"
            )
    return "; ".join(problems) or None


def _finish_create(name: str, config_name: str, owner: str, settings: Settings) -> None:
    reason = _provision(config_name, settings)
    if reason is None:
        done = _transition(
            settings,
            name,
            owner,
            status=IN_SERVICE,
            failure_reason=None,
            version=EndpointRecord.version + 1,
            operation_owner=None,
        )
    else:
        done = _transition(
            settings, name, owner, status=FAILED, failure_reason=reason, operation_owner=None
        )
    if done:
        logger.info("endpoint %s is %s", name, IN_SERVICE if reason is None else FAILED)


def _finish_update(
    name: str, old_config: str, new_config: str, owner: str, settings: Settings
) -> None:
    reason = _provision(new_config, settings)
    if reason is None:
        _transition(
            settings,
            name,
            owner,
            status=IN_SERVICE,
            config_name=new_config,
            pending_config_name=None,
            failure_reason=None,
            version=EndpointRecord.version + 1,
            operation_owner=None,
        )
        logger.info("endpoint %s now runs config %s", name, new_config)
        return
    # Like SageMaker: a failed update rolls back and the old config keeps serving.
    _transition(
        settings,
        name,
        owner,
        status=IN_SERVICE,
        pending_config_name=None,
        failure_reason=(
            f"update to endpoint config {new_config} failed, still serving {old_config}: {reason}"
        ),
        operation_owner=None,
    )
    logger.warning("update of endpoint %s to %s failed", name, new_config)


def _finish_delete(name: str, owner: str, settings: Settings) -> None:
    with session_scope(settings) as session:
        session.execute(delete(VariantStatsRecord).where(VariantStatsRecord.endpoint_name == name))
        session.execute(
            delete(EndpointRecord).where(
                EndpointRecord.name == name, EndpointRecord.operation_owner == owner
            )
        )
    logger.info("deleted endpoint %s", name)


def recover_if_orphaned(row: EndpointRow, settings: Settings) -> bool:
    """Finish a transition whose process died; True if this call did so."""
    if row.status not in _TRANSITIONAL or not _owner_is_dead(row.operation_owner):
        return False
    me = _owner()
    if not _transition(settings, row.name, row.operation_owner, operation_owner=me):
        return False
    logger.warning("finishing the interrupted %s of endpoint %s", row.status, row.name)
    if row.status == CREATING:
        _finish_create(row.name, row.config_name, me, settings)
    elif row.status == UPDATING and row.pending_config_name:
        _finish_update(row.name, row.config_name, row.pending_config_name, me, settings)
    elif row.status == DELETING:
        _finish_delete(row.name, me, settings)
    else:
        _transition(settings, row.name, me, status=IN_SERVICE, operation_owner=None)
    return True


def load_endpoint(name: str, settings: Settings) -> tuple[EndpointRow, list[VariantRow]]:
    for _ in range(2):
        with session_scope(settings) as session:
            row = _endpoint_row(get_endpoint_record(session, name))
            variants = variant_rows(session, row.config_name)
        if not recover_if_orphaned(row, settings):
            return row, variants
    with session_scope(settings) as session:
        row = _endpoint_row(get_endpoint_record(session, name))
        return row, variant_rows(session, row.config_name)


def create_endpoint(
    name: str, config_name: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Create an endpoint and bring it to ``InService`` (or ``Failed`` with a reason).

    The endpoint is recorded ``Creating`` first, so other processes see it;
    this call returns once every variant's artifacts are present locally
    (remote ones downloaded into ``$BCD_HOME/cache/models/<model>/``).

    Args:
        name: The endpoint's name (unique).
        config_name: The endpoint config to run.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        ``{"EndpointArn"}``; the outcome is in :func:`describe_endpoint`.

    Raises:
        InvalidInputError: Bad name.
        NotFoundError: No such endpoint config.
        ConflictError: An endpoint with that name exists.
    """
    settings = settings or get_settings()
    validate_name(name, "endpoint name")
    owner = _owner()
    exists = ConflictError(
        f"an endpoint named {name!r} exists already; update it to a new config "
        f"(bcd endpoints update {name} --config CONFIG) or delete it first"
    )
    try:
        with session_scope(settings) as session:
            get_config_record(session, config_name)
            if session.get(EndpointRecord, name) is not None:
                raise exists
            session.add(
                EndpointRecord(
                    name=name,
                    config_name=config_name,
                    status=CREATING,
                    version=0,
                    operation_owner=owner,
                )
            )
    except IntegrityError as exc:
        raise exists from exc
    logger.info("creating endpoint %s from config %s", name, config_name)
    _finish_create(name, config_name, owner, settings)
    return {"EndpointArn": arn("endpoint", name)}


def update_endpoint(
    name: str, config_name: str, settings: Settings | None = None
) -> dict[str, Any]:
    """Move an ``InService`` endpoint to another config (``Updating`` → ``InService``).

    Traffic stays on the old config until the new one's artifacts are
    present; then ``version`` increases by one, which tells servers to load
    and warm the new variants before switching. A failed update leaves the
    endpoint ``InService`` on the old config with a ``FailureReason``.

    Returns:
        ``{"EndpointArn"}``.

    Raises:
        NotFoundError: No such endpoint or config.
        ConflictError: The endpoint is not ``InService`` (creating, updating,
            deleting, or failed).
    """
    settings = settings or get_settings()
    owner = _owner()
    load_endpoint(name, settings)  # finishes an interrupted transition first
    with session_scope(settings) as session:
        record = get_endpoint_record(session, name)
        get_config_record(session, config_name)
        old_config = record.config_name
        result = session.execute(
            update(EndpointRecord)
            .where(
                EndpointRecord.name == name,
                EndpointRecord.status == IN_SERVICE,
                EndpointRecord.operation_owner.is_(None),
            )
            .values(
                status=UPDATING,
                pending_config_name=config_name,
                operation_owner=owner,
                updated_at=utcnow(),
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            status = record.status
            advice = (
                "delete it and create it again"
                if status == FAILED
                else "wait until it is InService"
            )
            raise ConflictError(f"endpoint {name!r} is {status}, so it cannot be updated; {advice}")
    logger.info("updating endpoint %s from config %s to %s", name, old_config, config_name)
    _finish_update(name, old_config, config_name, owner, settings)
    return {"EndpointArn": arn("endpoint", name)}


def fail_endpoint(name: str, version: int, reason: str, settings: Settings | None = None) -> bool:
    """Mark a serving endpoint ``Failed`` because a server could not load it.

    Serving calls this when a model file no longer matches its recorded
    SHA-256. Only the version the server tried is marked: an endpoint updated
    meanwhile (``version`` moved on), deleted, or already failed is left alone.

    Args:
        name: The endpoint's name.
        version: The version the server failed to load.
        reason: The ``FailureReason`` to record (names the file and digests).
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        Whether the endpoint was marked.
    """
    settings = settings or get_settings()
    with session_scope(settings) as session:
        result = session.execute(
            update(EndpointRecord)
            .where(
                EndpointRecord.name == name,
                EndpointRecord.version == version,
                EndpointRecord.status.in_((IN_SERVICE, UPDATING)),
            )
            .values(status=FAILED, failure_reason=reason, updated_at=utcnow())
        )
        marked = bool(result.rowcount == 1)  # type: ignore[attr-defined]
    if marked:
        logger.error("endpoint %s is Failed: %s", name, reason)
    return marked


def delete_endpoint(name: str, settings: Settings | None = None) -> None:
    """Delete an endpoint (``Deleting`` → gone); its config stays for re-creation.

    Raises:
        NotFoundError: No such endpoint.
    """
    settings = settings or get_settings()
    owner = _owner()
    with session_scope(settings) as session:
        record = get_endpoint_record(session, name)
        record.status = DELETING
        record.operation_owner = owner
        record.updated_at = utcnow()
    _finish_delete(name, owner, settings)
