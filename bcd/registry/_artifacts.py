"""Model artifact folders: validate ``model.json`` + ``model.onnx``, fetch remote ones.

A model artifact is a folder (local path or fsspec URL) with ``model.json``
(the fields listed in docs/architecture.md) and the ONNX file it names; its
torch weights (``model.pt``) come along when the folder has them, for Grad-CAM
explanations (not fingerprinted: only the ONNX graph is served, and torch
loads them with ``weights_only``). The registry never imports onnxruntime;
serving opens the graph.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcd.config import Settings
from bcd.errors import ArtifactIntegrityError, InvalidInputError, NotFoundError
from bcd.neighbourhood import parse_slide_context
from bcd.stain import StainNormalizer

logger = logging.getLogger(__name__)

MODEL_JSON = "model.json"
#: The torch weights beside the ONNX graph (``load_model`` and Grad-CAM read them).
TORCH_WEIGHTS = "model.pt"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArtifactInfo:
    """What :func:`inspect_artifact` learned about an artifact folder."""

    url: str
    model_json: dict[str, Any]
    onnx_file: str
    onnx_sha256: str
    onnx_bytes: int


def normalize_url(url: str) -> str:
    """An artifact URL in stored form: local paths absolute, ``file://`` stripped."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInputError("the model artifact location must be a non-empty path or URL")
    url = url.strip()
    if url.startswith("file://"):
        url = url[len("file://") :]
    if "://" not in url:
        return str(Path(url).expanduser().resolve())
    return url.rstrip("/")


def is_local(url: str) -> bool:
    """Whether a normalized artifact URL is a local folder."""
    return "://" not in url


def _filesystem(url: str, settings: Settings) -> tuple[Any, str]:
    import fsspec  # lazily: serving start-up pays for it only when it fetches

    try:
        return fsspec.core.url_to_fs(url, **settings.storage_options())
    except (ImportError, ValueError) as exc:
        raise InvalidInputError(f"cannot open model artifact location {url!r}: {exc}") from exc


def validate_model_json(document: Any, source: str) -> dict[str, Any]:
    """Check that a parsed ``model.json`` has what serving needs.

    Args:
        document: The parsed JSON.
        source: Where it came from, for error messages.

    Returns:
        The document, unchanged.

    Raises:
        InvalidInputError: Naming the first missing or malformed field.
    """

    def fail(problem: str) -> InvalidInputError:
        return InvalidInputError(
            f"{source}: {problem}; see the model.json section of docs/architecture.md"
        )

    if not isinstance(document, dict):
        raise fail("model.json must hold a JSON object")
    if document.get("format_version") != 1:
        raise fail(f"format_version must be 1, not {document.get('format_version')!r}")
    spec = document.get("input")
    if not isinstance(spec, dict):
        raise fail("'input' must be an object with shape, scale, mean and std")
    shape = spec.get("shape")
    if not (
        isinstance(shape, list)
        and len(shape) == 3
        and all(isinstance(size, int) and size > 0 for size in shape)
    ):
        raise fail(f"input.shape must be three positive integers [C, H, W], not {shape!r}")
    channels = shape[0]
    scale = spec.get("scale")
    if not isinstance(scale, int | float) or scale <= 0:
        raise fail(f"input.scale must be a positive number, not {scale!r}")
    for key in ("mean", "std"):
        values = spec.get(key)
        if not (
            isinstance(values, list)
            and len(values) == channels
            and all(isinstance(value, int | float) for value in values)
        ):
            raise fail(f"input.{key} must be {channels} numbers, not {values!r}")
    if any(value <= 0 for value in spec["std"]):
        raise fail("input.std values must be positive")
    classes = document.get("class_names")
    if not (
        isinstance(classes, list)
        and len(classes) >= 2
        and all(isinstance(name, str) for name in classes)
    ):
        raise fail(f"class_names must list at least two names, not {classes!r}")
    temperature = document.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or temperature <= 0:
        raise fail(f"temperature must be a positive number, not {temperature!r}")
    bias = document.get("logit_bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, int | float) or not abs(bias) < 1e6:
        raise fail(f"logit_bias must be a finite number, not {bias!r}")
    threshold = document.get("decision_threshold", 0.5)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise fail(f"decision_threshold must be a number in (0, 1), not {threshold!r}")
    if not 0.0 < threshold < 1.0:
        raise fail(f"decision_threshold must be a number in (0, 1), not {threshold!r}")
    try:
        parse_slide_context(document.get("slide_context"))
    except InvalidInputError as error:
        raise fail(str(error).removeprefix("model.json ")) from None
    try:
        StainNormalizer.from_json(spec.get("stain_normalization"), require_library=False)
    except InvalidInputError as error:
        raise fail(str(error).removeprefix("model.json ")) from None
    onnx = document.get("onnx")
    if not isinstance(onnx, dict):
        raise fail("'onnx' must be an object with file, input_name and output_name")
    for key in ("file", "input_name", "output_name"):
        if not isinstance(onnx.get(key), str) or not onnx[key]:
            raise fail(f"onnx.{key} must be a non-empty string")
    if "/" in onnx["file"] or "\\" in onnx["file"] or onnx["file"] in (".", ".."):
        raise fail(f"onnx.file must be a file name inside the folder, not {onnx['file']!r}")
    return document


def inspect_artifact(url: str, settings: Settings) -> ArtifactInfo:
    """Validate an artifact folder and fingerprint its ONNX file.

    Args:
        url: A local folder or fsspec URL (``s3://bucket/…/model``).
        settings: For storage options of remote URLs.

    Returns:
        The normalized URL, the parsed ``model.json``, and the ONNX file's
        name, SHA-256 and size.

    Raises:
        NotFoundError: The folder, ``model.json`` or the ONNX file is missing.
        InvalidInputError: ``model.json`` does not parse or lacks a field.
    """
    url = normalize_url(url)
    fs, path = _filesystem(url, settings)
    if not fs.exists(path) or not fs.isdir(path):
        raise NotFoundError(
            f"no model artifact folder at {url!r}; point at a folder holding "
            "model.onnx and model.json (a training job's model/ folder)"
        )
    json_path = f"{path.rstrip('/')}/{MODEL_JSON}"
    if not fs.exists(json_path):
        raise NotFoundError(f"{url!r} has no {MODEL_JSON}; is it a bcd model folder?")
    with fs.open(json_path, "rb") as handle:
        raw = handle.read()
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{url}/{MODEL_JSON} is not valid JSON: {exc}") from exc
    validate_model_json(document, f"{url}/{MODEL_JSON}")
    onnx_file = document["onnx"]["file"]
    onnx_path = f"{path.rstrip('/')}/{onnx_file}"
    if not fs.exists(onnx_path) or fs.isdir(onnx_path):
        raise NotFoundError(f"{url!r} has no {onnx_file} although {MODEL_JSON} names it")
    digest = hashlib.sha256()
    size = 0
    with fs.open(onnx_path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    if size == 0:
        raise InvalidInputError(f"{url}/{onnx_file} is empty")
    return ArtifactInfo(url, document, onnx_file, digest.hexdigest(), size)


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a local file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_onnx(path: Path, expected_sha256: str, model_name: str) -> None:
    """Check that a local ONNX file is the one registered (hashes it once).

    Args:
        path: The ONNX file.
        expected_sha256: The digest recorded when the model was created.
        model_name: For the message.

    Raises:
        NotFoundError: The file is gone.
        ArtifactIntegrityError: Its SHA-256 differs (the message names the file
            and both digests).
    """
    if not path.is_file():
        raise NotFoundError(f"the ONNX file {path} of model {model_name!r} is missing")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise ArtifactIntegrityError.mismatch(path, expected_sha256, actual, model_name)


def cache_dir(model_name: str, settings: Settings) -> Path:
    """Where a remote model's artifacts are kept on this machine."""
    return settings.home / "cache" / "models" / model_name


def local_model_dir(model_name: str, url: str, settings: Settings) -> Path:
    """The local folder serving loads a model from (its own folder, or the cache)."""
    return Path(url) if is_local(url) else cache_dir(model_name, settings)


def materialize(
    model_name: str,
    url: str,
    onnx_file: str,
    onnx_sha256: str,
    settings: Settings,
    verify: bool = True,
) -> Path:
    """Make a model's artifacts present locally and check they are the registered ones.

    Remote folders are downloaded into ``$BCD_HOME/cache/models/<model>/`` beside
    the target and renamed into place, so a crash never leaves half a model:
    ``model.json``, the ONNX file and, when the folder has it, ``model.pt``
    (the torch weights Grad-CAM explanations need). A verified cache without
    ``model.pt`` gets it then, when the source has it by now.

    Args:
        model_name: The registered model's name.
        url: Its stored artifact URL.
        onnx_file: The ONNX file name from its ``model.json``.
        onnx_sha256: The digest recorded when the model was created.
        settings: For ``home`` and storage options.
        verify: Re-hash files already present (always done after a download).

    Returns:
        The local folder holding ``model.json``, the ONNX file and ``model.pt``
        when the source has one.

    Raises:
        NotFoundError: The artifacts are gone.
        ArtifactIntegrityError: The ONNX file is not the one registered (changed since).
    """
    target = local_model_dir(model_name, url, settings)
    if target.is_dir() and (target / onnx_file).is_file() and (target / MODEL_JSON).is_file():
        if not verify:
            return target
        actual = file_sha256(target / onnx_file)
        if actual == onnx_sha256:
            if not is_local(url):
                _top_up_weights(url, target, settings)
            return target
        if is_local(url):
            raise ArtifactIntegrityError.mismatch(
                target / onnx_file, onnx_sha256, actual, model_name
            )
    elif is_local(url):
        raise NotFoundError(
            f"the artifacts of model {model_name!r} are missing: expected {onnx_file} and "
            f"{MODEL_JSON} in {target}"
        )
    fs, path = _filesystem(url, settings)
    if not fs.exists(path):
        raise NotFoundError(f"the artifacts of model {model_name!r} are gone from {url}")
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        for name in (MODEL_JSON, onnx_file):
            fs.get_file(f"{path.rstrip('/')}/{name}", str(staging / name))
        actual = file_sha256(staging / onnx_file)
        if actual != onnx_sha256:
            raise ArtifactIntegrityError.mismatch(
                f"{url}/{onnx_file}", onnx_sha256, actual, model_name
            )
        _fetch_weights(fs, path, staging)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("downloaded the artifacts of model %s into %s", model_name, target)
    return target


def _fetch_weights(fs: Any, path: str, folder: Path) -> bool:
    """Download the torch weights into ``folder`` when the remote folder has them.

    They are optional (serving runs the ONNX graph; only explanations need
    them), so a folder without them is not an error. The file lands under a
    temporary name first, so a failed download never leaves half of it.

    Returns:
        Whether the weights were fetched.
    """
    source = f"{path.rstrip('/')}/{TORCH_WEIGHTS}"
    partial = folder / f".{TORCH_WEIGHTS}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        if not fs.exists(source) or fs.isdir(source):
            return False
        fs.get_file(source, str(partial))
        os.replace(partial, folder / TORCH_WEIGHTS)
    except OSError as error:  # optional: the ONNX model serves without them
        logger.warning("could not fetch the torch weights %s: %s", source, error)
        return False
    finally:
        partial.unlink(missing_ok=True)
    return True


def _top_up_weights(url: str, target: Path, settings: Settings) -> None:
    """Bring the torch weights into a verified cache that lacks them (cached before they came)."""
    if (target / TORCH_WEIGHTS).is_file():
        return
    fs, path = _filesystem(url, settings)
    if _fetch_weights(fs, path, target):
        logger.info("downloaded the torch weights of %s into %s", url, target)
