"""The bundled default model, registered and deployed on demand."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from bcd.config import Settings, get_settings
from bcd.db import session_scope
from bcd.errors import ArtifactIntegrityError, ConflictError, NotFoundError, NotReadyError
from bcd.registry import _artifacts
from bcd.registry._configs import create_endpoint_config
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
BUNDLED_VARIANT = "AllTraffic"
#: SHA-256 of the shipped ``bcd/bundled/model.onnx``: the bundled model is
#: verified against it before it is registered or refreshed, so a changed file
#: is refused instead of silently becoming the default model. Replace it together
#: with the file (``sha256sum bcd/bundled/model.onnx``).
BUNDLED_ONNX_SHA256 = "ed50fcc21bd070aa3e827cf400db06710153cc024989c7989491f85b42cf9bc9"


def bundled_model_dir() -> Path:
    """The folder of the bundled model inside the installed package."""
    from bcd.bundled import MODEL_DIR

    return MODEL_DIR


def verify_bundled_model(folder: Path | None = None) -> None:
    """Check the bundled ONNX file against :data:`BUNDLED_ONNX_SHA256`.

    Args:
        folder: The bundled model's folder (default: the installed one).

    Raises:
        NotFoundError: The ONNX file is missing.
        ArtifactIntegrityError: It is not the file this bcd release ships.
    """
    folder = folder or bundled_model_dir()
    _artifacts.verify_onnx(folder / "model.onnx", BUNDLED_ONNX_SHA256, BUNDLED_MODEL)


def _fail_bundled_endpoint(name: str, reason: str, settings: Settings) -> None:
    """Mark the default endpoint ``Failed`` if it serves the bundled config."""
    with session_scope(settings) as session:
        endpoint = session.get(EndpointRecord, name)
        version = endpoint.version if endpoint and endpoint.config_name == name else None
    if version is not None:
        fail_endpoint(name, version, reason, settings)


def _register_model(folder: Path, settings: Settings) -> bool:
    """Register or refresh the bundled model record; True when it changed."""
    info = _artifacts.inspect_artifact(str(folder), settings)
    with session_scope(settings) as session:
        record = session.get(ModelRecord, BUNDLED_MODEL)
        if record is not None:
            if record.onnx_sha256 == info.onnx_sha256 and record.artifact_url == info.url:
                return False
            # bcd was upgraded or moved: the bundled record follows the package.
            record.artifact_url = info.url
            record.model_json = info.model_json
            record.onnx_sha256 = info.onnx_sha256
            record.onnx_bytes = info.onnx_bytes
            logger.info("refreshed the bundled model record from %s", info.url)
            return True
    try:
        register_artifact(BUNDLED_MODEL, str(folder), SOURCE_BUNDLED, None, settings)
    except ConflictError:
        return False  # another process registered it a moment ago
    return True


def ensure_bundled_endpoint(settings: Settings | None = None) -> str:
    """Register the bundled model and deploy it as ``settings.default_endpoint``.

    Idempotent: an existing endpoint of that name is kept (it may run another
    config the user chose); a ``Failed`` one on the bundled config is
    re-created; a refreshed bundled model (after an upgrade) is rolled out by
    an update.

    Args:
        settings: Defaults to :func:`bcd.config.get_settings`.

    Returns:
        The endpoint's name.

    Raises:
        NotFoundError: The bundled model is not in this installation.
        ArtifactIntegrityError: The bundled ONNX file is not the one this
            release ships (the endpoint, when it serves it, is marked ``Failed``).
        NotReadyError: The endpoint exists but is ``Failed`` on a config the
            user chose (the message holds its reason).
    """
    settings = settings or get_settings()
    folder = bundled_model_dir()
    if not (folder / "model.onnx").is_file() or not (folder / "model.json").is_file():
        raise NotFoundError(
            f"the bundled model is not in this installation (expected model.onnx and "
            f"model.json in {folder}); build it with 'bcd quickstart', or deploy your own "
            "model with 'bcd models create', 'bcd endpoint-configs create' and "
            "'bcd endpoints create'"
        )
    name = settings.default_endpoint
    try:
        verify_bundled_model(folder)
    except ArtifactIntegrityError as error:
        _fail_bundled_endpoint(name, str(error), settings)
        raise
    refreshed = _register_model(folder, settings)
    with session_scope(settings) as session:
        has_config = session.get(EndpointConfigRecord, name) is not None
        endpoint = session.get(EndpointRecord, name)
        status = endpoint.status if endpoint else None
        runs_bundled_config = endpoint is not None and endpoint.config_name == name
        reason = endpoint.failure_reason if endpoint else None
    if not has_config:
        variant = {
            "VariantName": BUNDLED_VARIANT,
            "ModelName": BUNDLED_MODEL,
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1.0,
        }
        with contextlib.suppress(ConflictError):
            create_endpoint_config(name, [variant], settings)
    if status == FAILED:
        if not runs_bundled_config:
            raise NotReadyError(
                f"endpoint {name!r} is Failed: {reason}; delete it (bcd endpoints delete "
                f"{name}) to get the bundled model back, or fix its config"
            )
        delete_endpoint(name, settings)
        status = None
    if status is None:
        with contextlib.suppress(ConflictError):
            create_endpoint(name, name, settings)
    elif refreshed and status == IN_SERVICE and runs_bundled_config:
        update_endpoint(name, name, settings)
    with session_scope(settings) as session:
        endpoint = session.get(EndpointRecord, name)
        if endpoint is not None and endpoint.status == FAILED:
            raise NotReadyError(f"endpoint {name!r} is Failed: {endpoint.failure_reason}")
    return name
