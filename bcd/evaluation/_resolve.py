"""What to evaluate: a model folder, a registered model, or an endpoint's variant."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from bcd.config import Settings
from bcd.errors import ConflictError, InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

MODEL_JSON = "model.json"


@dataclass(frozen=True)
class ModelTarget:
    """A model ready to load, and how the user named it.

    Attributes:
        reference: What the user typed.
        kind: ``"folder"``, ``"model"`` or ``"endpoint"``.
        model_dir: Local folder with ``model.json`` and the ONNX file.
        name: The registered model's name (``None`` for a bare folder).
        endpoint: The endpoint's name, when evaluated through one.
        variant: The endpoint's variant, when evaluated through one.
    """

    reference: str
    kind: str
    model_dir: Path
    name: str | None = None
    endpoint: str | None = None
    variant: str | None = None

    def describe(self) -> dict[str, str | None]:
        """JSON-ready description for the report."""
        return {
            "reference": self.reference,
            "kind": self.kind,
            "name": self.name or self.model_dir.name,
            "model_dir": str(self.model_dir),
            "endpoint": self.endpoint,
            "variant": self.variant,
        }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch_remote(name: str, url: str, onnx_file: str, sha256: str, settings: Settings) -> Path:
    """Copy a remote model folder into ``$BCD_HOME/cache/evaluation/<name>``, checked."""
    import fsspec

    target = settings.home / "cache" / "evaluation" / name
    if (target / onnx_file).is_file() and _sha256(target / onnx_file) == sha256:
        return target
    fs, root = fsspec.core.url_to_fs(url, **settings.storage_options())
    staging = target.with_name(f".{name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir(parents=True)
    try:
        for file_name in (MODEL_JSON, onnx_file):
            fs.get_file(f"{root.rstrip('/')}/{file_name}", str(staging / file_name))
        if sha256 and _sha256(staging / onnx_file) != sha256:
            raise ConflictError(
                f"{url}/{onnx_file} changed since model {name!r} was registered; "
                "register the new artifacts as a new model"
            )
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _registered_model(name: str, settings: Settings) -> Path | None:
    from bcd import registry

    try:
        description = registry.describe_model(name, settings=settings)
    except NotFoundError:
        if name == registry.BUNDLED_MODEL:
            from bcd.bundled import MODEL_DIR

            registry.verify_bundled_model(Path(MODEL_DIR))
            return Path(MODEL_DIR)
        return None
    url = str(description["PrimaryContainer"]["ModelDataUrl"])
    onnx_file = str(description["ModelMetadata"]["onnx"]["file"])
    if "://" not in url or url.startswith("file://"):
        folder = Path(url.removeprefix("file://"))
        registry.verify_onnx(folder / onnx_file, str(description["OnnxSha256"]), name)
        return folder
    return _fetch_remote(name, url, onnx_file, str(description.get("OnnxSha256") or ""), settings)


def _endpoint_variant(name: str, variant: str | None, settings: Settings) -> ModelTarget | None:
    from bcd import registry

    try:
        endpoint = registry.resolve_endpoint(name, settings=settings)
    except NotFoundError:
        return None
    if not endpoint.variants:
        raise ConflictError(f"endpoint {name!r} has no production variants to evaluate")
    if variant is not None:
        chosen = [v for v in endpoint.variants if v.variant_name == variant]
        if not chosen:
            known = ", ".join(v.variant_name for v in endpoint.variants)
            raise NotFoundError(f"endpoint {name!r} has no variant {variant!r} (it has {known})")
        picked = chosen[0]
    else:
        # The variant that takes most of the traffic is what most requests see.
        picked = max(endpoint.variants, key=lambda v: v.weight)
        if len(endpoint.variants) > 1:
            logger.warning(
                "endpoint %s has %d variants; evaluating %s (pass --variant for another)",
                name,
                len(endpoint.variants),
                picked.variant_name,
            )
    metadata = registry.describe_model(picked.model_name, settings=settings)["ModelMetadata"]
    onnx_path = Path(picked.model_dir) / metadata["onnx"]["file"]
    registry.verify_onnx(onnx_path, picked.onnx_sha256, picked.model_name)
    return ModelTarget(
        reference=name,
        kind="endpoint",
        model_dir=Path(picked.model_dir),
        name=picked.model_name,
        endpoint=name,
        variant=picked.variant_name,
    )


def resolve_model(reference: str, settings: Settings, variant: str | None = None) -> ModelTarget:
    """Find the model a user named: a folder path, a registered model, or an endpoint.

    A path that exists wins; then a registered model of that name; then an
    endpoint (its heaviest variant, or ``variant``).

    Args:
        reference: Folder path, model name or endpoint name.
        settings: Where the registry lives.
        variant: The endpoint variant to evaluate.

    Returns:
        The model to load.

    Raises:
        NotFoundError: Nothing of that name exists.
        InvalidInputError: A folder without ``model.json``, or ``variant``
            given for something that is not an endpoint.
    """
    path = Path(reference).expanduser()
    if path.exists():
        if not (path / MODEL_JSON).is_file():
            raise InvalidInputError(
                f"{path} has no {MODEL_JSON}; pass a model folder (a training job's model/ "
                "output), a registered model name or an endpoint name"
            )
        if variant is not None:
            raise InvalidInputError("--variant only applies to endpoints, not to a model folder")
        return ModelTarget(reference, "folder", path.resolve())
    if variant is None:
        model_dir = _registered_model(reference, settings)
        if model_dir is not None:
            return ModelTarget(reference, "model", model_dir, name=reference)
    target = _endpoint_variant(reference, variant, settings)
    if target is not None:
        return target
    raise NotFoundError(
        f"{reference!r} is neither a model folder, a registered model nor an endpoint; "
        "see `bcd models list` and `bcd endpoints list`"
    )
