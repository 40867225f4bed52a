"""``Predictor``: send images to an endpoint and read back probabilities."""

from __future__ import annotations

import io
import json
import os
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import InvalidInputError, NotFoundError

_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
}


def _read_image_file(path: str | os.PathLike[str]) -> tuple[bytes, str, str]:
    file = Path(path)
    if not file.is_file():
        raise NotFoundError(f"no image file at {file}")
    return (
        file.read_bytes(),
        _IMAGE_TYPES.get(file.suffix.lower(), "application/x-image"),
        file.name,
    )


def _multipart(files: list[tuple[bytes, str, str]]) -> tuple[bytes, str]:
    boundary = f"bcd-{secrets.token_hex(12)}"
    body = io.BytesIO()
    for data, content_type, filename in files:
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        body.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
            f'filename="{safe_name}"\r\nContent-Type: {content_type}\r\n\r\n'.encode()
        )
        body.write(data)
        body.write(b"\r\n")
    body.write(f"--{boundary}--\r\n".encode())
    return body.getvalue(), f"multipart/form-data; boundary={boundary}"


def _npy(array: Any) -> bytes:
    import numpy as np

    if array.dtype == object:
        raise InvalidInputError("image arrays must be numeric (uint8 H×W×3), not object arrays")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def encode_request(image: Any) -> tuple[bytes, str]:
    """Turn what a user passes to :meth:`Predictor.predict` into a body and content type.

    Args:
        image: A path, raw image bytes, a numpy array (H×W×3 or N×H×W×3), or a
            list of paths / bytes (sent as ``multipart/form-data``) or of
            arrays (one ``.npy`` batch when shapes agree, else JSON ``instances``).

    Returns:
        ``(body, content_type)``.

    Raises:
        InvalidInputError: An empty list, mixed kinds, or an unsupported type.
        NotFoundError: A path that is not a file.
    """
    import numpy as np

    if isinstance(image, str | os.PathLike):
        data, content_type, _ = _read_image_file(image)
        return data, content_type
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image), "application/x-image"
    if isinstance(image, np.ndarray):
        return _npy(image), "application/x-npy"
    if isinstance(image, Sequence) and not isinstance(image, str):
        items = list(image)
        if not items:
            raise InvalidInputError("predict() got an empty list; pass at least one image")
        if all(isinstance(item, str | os.PathLike | bytes | bytearray) for item in items):
            files = [
                _read_image_file(item)
                if isinstance(item, str | os.PathLike)
                else (bytes(item), "application/octet-stream", f"image-{index}")
                for index, item in enumerate(items)
            ]
            return _multipart(files)
        if all(isinstance(item, np.ndarray) for item in items):
            if len({item.shape for item in items}) == 1:
                return _npy(np.stack(items)), "application/x-npy"
            return json.dumps({"instances": [item.tolist() for item in items]}).encode(), (
                "application/json"
            )
        try:
            array = np.asarray(items)
        except ValueError as exc:
            raise InvalidInputError(f"cannot read the list as images: {exc}") from exc
        if array.dtype.kind not in "uif":
            raise InvalidInputError(
                "a list must hold image paths, image bytes, arrays, or nested numbers"
            )
        instances = [items] if array.ndim == 3 else items
        return json.dumps({"instances": instances}).encode(), "application/json"
    raise InvalidInputError(
        f"predict() cannot send a {type(image).__name__}; pass a path, bytes, "
        "a numpy array or a list of them"
    )


def _body_bytes(body: Any) -> bytes:
    if hasattr(body, "read"):
        body = body.read()
    return body.encode() if isinstance(body, str) else bytes(body)


class Predictor:
    """Calls one endpoint, like ``sagemaker.predictor.Predictor``.

    Args:
        endpoint_name: The endpoint to call.
        settings: Defaults to :func:`bcd.config.get_settings`.
    """

    def __init__(self, endpoint_name: str, settings: Settings | None = None) -> None:
        self.endpoint_name = endpoint_name
        self.settings = settings or get_settings()
        self._config_name: str | None = None
        self._model_names: list[str] | None = None

    def __repr__(self) -> str:
        return f"Predictor(endpoint_name={self.endpoint_name!r})"

    def predict(self, image: Any, target_variant: str | None = None) -> dict[str, Any]:
        """Classify one image or a batch.

        Args:
            image: A path, raw image bytes, a numpy array or a list of them
                (see :func:`encode_request`).
            target_variant: Pin a production variant (``X-Target-Variant``).

        Returns:
            The endpoint's JSON answer: per image ``probabilities``,
            ``predicted_class``, ``cancer_detected`` and ``message``, plus
            ``model`` and ``variant``.

        Raises:
            InvalidInputError: The image cannot be sent or the endpoint refused it.
            NotFoundError: No such endpoint, or a path that is not a file.
        """
        import bcd

        body, content_type = encode_request(image)
        call: dict[str, Any] = {
            "EndpointName": self.endpoint_name,
            "ContentType": content_type,
            "Body": body,
            "Accept": "application/json",
        }
        if target_variant:
            call["TargetVariant"] = target_variant
        response = bcd.runtime_client(settings=self.settings).invoke_endpoint(**call)
        payload = _body_bytes(response["Body"])
        try:
            return json.loads(payload)  # type: ignore[no-any-return]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidInputError(
                f"endpoint {self.endpoint_name} answered something that is not JSON"
            ) from exc

    def _remember_resources(self) -> None:
        from bcd import registry

        description = registry.describe_endpoint(self.endpoint_name, settings=self.settings)
        self._config_name = description["EndpointConfigName"]
        self._model_names = [variant["ModelName"] for variant in description["ProductionVariants"]]

    def delete_endpoint(self, delete_endpoint_config: bool = True) -> None:
        """Delete the endpoint (and, by default, its endpoint config).

        Raises:
            NotFoundError: The endpoint does not exist.
        """
        from bcd import registry

        self._remember_resources()
        registry.delete_endpoint(self.endpoint_name, settings=self.settings)
        if delete_endpoint_config and self._config_name:
            registry.delete_endpoint_config(self._config_name, settings=self.settings)

    def delete_model(self) -> None:
        """Delete the models the endpoint served; call :meth:`delete_endpoint` first.

        Raises:
            ConflictError: Another endpoint config still uses a model.
        """
        from bcd import registry

        if self._model_names is None:
            self._remember_resources()
        for model_name in dict.fromkeys(self._model_names or []):
            registry.delete_model(model_name, settings=self.settings)
