"""The bundled default models, registered and deployed on demand as two production variants.

``bcd/bundled/`` ships two models: ``fast`` (model ``bcd-bundled``, the files at
the top of the folder) and ``accurate`` (model ``bcd-bundled-accurate``, the
subfolder ``accurate/``). :func:`ensure_bundled_endpoint` deploys both behind
``Settings.default_endpoint``: the :data:`BUNDLED_DEFAULT_VARIANT` takes every
request that does not pin a variant (weight 1), the other one only requests
that pin it with ``X-Target-Variant`` (weight 0).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcd.config import Settings, get_settings
from bcd.db import session_scope
from bcd.errors import ArtifactIntegrityError, ConflictError, NotFoundError, NotReadyError
from bcd.registry import _artifacts
from bcd.registry._configs import config_variants, create_endpoint_config
from bcd.registry._lifecycle import (
    create_endpoint,
    delete_endpoint,
    fail_endpoint,
    update_endpoint,
)
from bcd.registry._models import SOURCE_BUNDLED, register_artifact
from bcd.registry._tables import EndpointConfigRecord, EndpointRecord, ModelRecord
from bcd.registry._types import FAILED, IN_SERVICE

logger = logging.getLogger(__name__)

BUNDLED_MODEL = "bcd-bundled"
BUNDLED_ACCURATE_MODEL = "bcd-bundled-accurate"
BUNDLED_FAST_VARIANT = "fast"
BUNDLED_ACCURATE_VARIANT = "accurate"
#: The variant that answers requests to the bundled endpoint that do not pin one
#: with ``X-Target-Variant``. Changing it re-deploys the endpoint on the next
#: :func:`ensure_bundled_endpoint` (a new config, ``version`` + 1).
BUNDLED_DEFAULT_VARIANT = BUNDLED_ACCURATE_VARIANT
#: SHA-256 of the shipped ``bcd/bundled/model.onnx`` (the ``fast`` variant): the
#: bundled model is verified against it before it is registered or refreshed, so a
#: changed file is refused instead of silently becoming the default model. A model
#: update replaces the files and this constant, nothing else
#: (``sha256sum bcd/bundled/model.onnx``); the next start rolls it out.
BUNDLED_ONNX_SHA256 = "ed50fcc21bd070aa3e827cf400db06710153cc024989c7989491f85b42cf9bc9"
#: SHA-256 of the shipped ``bcd/bundled/accurate/model.onnx`` (the ``accurate``
#: variant), checked the same way. A model update replaces the files of
#: ``bcd/bundled/accurate/`` and this constant, nothing else
#: (``sha256sum bcd/bundled/accurate/model.onnx``).
BUNDLED_ACCURATE_ONNX_SHA256 = "ee20b259028df154990a38503e528843129118c1b6ab018e7daa681161a9d6f6"

_MAX_NAME = 63


@dataclass(frozen=True)
class BundledVariant:
    """One production variant of the bundled endpoint and the files behind it."""

    variant_name: str
    model_name: str
    folder: Path
    onnx_sha256: str


def bundled_model_dir() -> Path:
    """The folder of the bundled ``fast`` model inside the installed package."""
    from bcd.bundled import MODEL_DIR

    return MODEL_DIR


def bundled_variants() -> list[BundledVariant]:
    """The bundled endpoint's variants, :data:`BUNDLED_DEFAULT_VARIANT` first."""
    from bcd.bundled import ACCURATE_SUBFOLDER

    folder = bundled_model_dir()
    variants = [
        BundledVariant(BUNDLED_FAST_VARIANT, BUNDLED_MODEL, folder, BUNDLED_ONNX_SHA256),
        BundledVariant(
            BUNDLED_ACCURATE_VARIANT,
            BUNDLED_ACCURATE_MODEL,
            folder / ACCURATE_SUBFOLDER,
            BUNDLED_ACCURATE_ONNX_SHA256,
        ),
    ]
    return sorted(variants, key=lambda variant: variant.variant_name != BUNDLED_DEFAULT_VARIANT)


def _bundled_variant(name: str) -> BundledVariant:
    for variant in bundled_variants():
        if name in (variant.variant_name, variant.model_name):
            return variant
    known = ", ".join(variant.variant_name for variant in bundled_variants())
    raise NotFoundError(f"there is no bundled variant {name!r}; the bundled ones are: {known}")


def verify_bundled_model(folder: Path | None = None, variant: str = BUNDLED_FAST_VARIANT) -> None:
    """Check a bundled ONNX file against the digest this release records for it.

    Args:
        folder: The variant's folder (default: the installed one).
        variant: ``fast`` (checked against :data:`BUNDLED_ONNX_SHA256`) or
            ``accurate`` (:data:`BUNDLED_ACCURATE_ONNX_SHA256`); a bundled model's
            name works too.

    Raises:
        NotFoundError: The ONNX file is missing, or there is no such bundled variant.
        ArtifactIntegrityError: It is not the file this bcd release ships.
    """
    chosen = _bundled_variant(variant)
    folder = folder or chosen.folder
    _artifacts.verify_onnx(folder / "model.onnx", chosen.onnx_sha256, chosen.model_name)


def _layout_suffix() -> str:
    """The variant names, default first, as a config-name suffix (``-accurate-fast``)."""
    return "".join(f"-{variant.variant_name}" for variant in bundled_variants())


def bundled_config_name(endpoint: str) -> str:
    """The bundled endpoint config of ``endpoint``: its name, then the variant names,
    default first (``bcd-default-accurate-fast``), cut to fit 63 characters."""
    suffix = _layout_suffix()
    return endpoint[: _MAX_NAME - len(suffix)] + suffix


def _is_bundled_config(session: Any, endpoint: str, config_name: str) -> bool:
    """Whether ``config_name`` was made by :func:`ensure_bundled_endpoint` for ``endpoint``.

    That is this release's config, or an older release's (named like the endpoint,
    with one ``AllTraffic`` variant, or with another default variant): a config
    named after the endpoint whose every variant serves a bundled model.
    """
    stem = endpoint[: _MAX_NAME - len(_layout_suffix())]
    if config_name != endpoint and not config_name.startswith(f"{stem}-"):
        return False
    models = [variant.model_name for variant in config_variants(session, config_name)]
    records = [session.get(ModelRecord, model) for model in models]
    return bool(records) and all(
        record is not None and record.source_type == SOURCE_BUNDLED for record in records
    )


def _fail_bundled_endpoint(name: str, reason: str, settings: Settings) -> None:
    """Mark the default endpoint ``Failed`` if it serves a bundled config."""
    with session_scope(settings) as session:
        endpoint = session.get(EndpointRecord, name)
        version = None
        if endpoint is not None and _is_bundled_config(session, name, endpoint.config_name):
            version = endpoint.version
    if version is not None:
        fail_endpoint(name, version, reason, settings)


def _register_model(variant: BundledVariant, settings: Settings) -> bool:
    """Register or refresh one bundled model record; True when it changed."""
    info = _artifacts.inspect_artifact(str(variant.folder), settings)
    with session_scope(settings) as session:
        record = session.get(ModelRecord, variant.model_name)
        if record is not None:
            if record.onnx_sha256 == info.onnx_sha256 and record.artifact_url == info.url:
                return False
            # bcd was upgraded or moved: the bundled record follows the package.
            record.artifact_url = info.url
            record.model_json = info.model_json
            record.onnx_sha256 = info.onnx_sha256
            record.onnx_bytes = info.onnx_bytes
            logger.info("refreshed the bundled model record %s from %s", record.name, info.url)
            return True
    try:
        register_artifact(variant.model_name, str(variant.folder), SOURCE_BUNDLED, None, settings)
    except ConflictError:
        return False  # another process registered it a moment ago
    return True


def _config_document(variants: list[BundledVariant]) -> list[dict[str, Any]]:
    """The production variants in boto3's shape: the first takes all unpinned traffic."""
    return [
        {
            "VariantName": variant.variant_name,
            "ModelName": variant.model_name,
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0 if index == 0 else 0.0,
        }
        for index, variant in enumerate(variants)
    ]


def _check_present(variants: list[BundledVariant]) -> None:
    for variant in variants:
        folder = variant.folder
        if not (folder / "model.onnx").is_file() or not (folder / "model.json").is_file():
            raise NotFoundError(
                f"the bundled {variant.variant_name!r} model is not in this installation "
                f"(expected model.onnx and model.json in {folder}); reinstall bcd (the fast "
                "one is rebuilt by 'bcd quickstart'), or deploy your own model with "
                "'bcd models create', 'bcd endpoint-configs create' and 'bcd endpoints create'"
            )


def _verify_and_register(variants: list[BundledVariant], name: str, settings: Settings) -> bool:
    """Verify every bundled file, then register or refresh its model; True if one changed."""
    try:
        for variant in variants:
            _artifacts.verify_onnx(
                variant.folder / "model.onnx", variant.onnx_sha256, variant.model_name
            )
    except ArtifactIntegrityError as error:
        _fail_bundled_endpoint(name, str(error), settings)
        raise
    changed = [_register_model(variant, settings) for variant in variants]
    return any(changed)


def ensure_bundled_endpoint(settings: Settings | None = None) -> str:
    """Register the bundled models and deploy them as ``settings.default_endpoint``.

    The endpoint runs config :func:`bundled_config_name` with variants ``fast``
    and ``accurate``; :data:`BUNDLED_DEFAULT_VARIANT` has weight 1, the other
    weight 0 (reached by ``X-Target-Variant``). Idempotent: an existing
    endpoint on a config the user chose is kept; a ``Failed`` one on a bundled
    config is re-created; one on an older bundled config (an older bcd's single
    ``AllTraffic`` variant, or another default variant) or with a refreshed
    bundled model (after an upgrade) is moved to this release's config by an
    update, which keeps its invocation counts.

    Args:
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        The endpoint's name.

    Raises:
        NotFoundError: A bundled model is not in this installation.
        ArtifactIntegrityError: A bundled ONNX file is not the one this release
            ships (the endpoint, when it serves the bundled models, is marked ``Failed``).
        NotReadyError: The endpoint exists but is ``Failed`` on a config the
            user chose (the message holds its reason).
    """
    settings = settings or get_settings()
    variants = bundled_variants()
    _check_present(variants)
    name = settings.default_endpoint
    refreshed = _verify_and_register(variants, name, settings)
    config = bundled_config_name(name)
    with session_scope(settings) as session:
        has_config = session.get(EndpointConfigRecord, config) is not None
        endpoint = session.get(EndpointRecord, name)
        status = endpoint.status if endpoint else None
        current = endpoint.config_name if endpoint else None
        runs_bundled = current is not None and _is_bundled_config(session, name, current)
        reason = endpoint.failure_reason if endpoint else None
    if not has_config:
        with contextlib.suppress(ConflictError):
            create_endpoint_config(config, _config_document(variants), settings)
    if status == FAILED:
        if not runs_bundled:
            raise NotReadyError(
                f"endpoint {name!r} is Failed: {reason}; delete it (bcd endpoints delete "
                f"{name}) to get the bundled model back, or fix its config"
            )
        delete_endpoint(name, settings)
        status = None
    if status is None:
        with contextlib.suppress(ConflictError):
            create_endpoint(name, config, settings)
    elif status == IN_SERVICE and runs_bundled and (refreshed or current != config):
        if current != config:
            logger.info("moving endpoint %s from config %s to %s", name, current, config)
        with contextlib.suppress(ConflictError):  # another process is updating it
            update_endpoint(name, config, settings)
    with session_scope(settings) as session:
        endpoint = session.get(EndpointRecord, name)
        if endpoint is not None and endpoint.status == FAILED:
            raise NotReadyError(f"endpoint {name!r} is Failed: {endpoint.failure_reason}")
    return name
