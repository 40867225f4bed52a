"""Low-level client call ``invoke_endpoint``, like boto3's ``sagemaker-runtime``.

Without a server URL the endpoint runs in this process (its runtime is loaded
once and cached); with ``endpoint_url=`` (or ``BCD_ENDPOINT_URL``) the call goes
over HTTP to ``bcd serve``. Both answer the same body and raise the same errors.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from bcd.clients._base import BaseClient
from bcd.config import Settings
from bcd.errors import BcdError, InvalidInputError, NotReadyError


def _body_bytes(body: Any) -> bytes:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    if hasattr(body, "read"):
        data = body.read()
        if isinstance(data, bytes | bytearray):
            return bytes(data)
    raise InvalidInputError("Body must be bytes or a binary file object (open(path, 'rb'))")


class RuntimeMixin(BaseClient):
    """Client methods for invoke_endpoint.

    Args:
        settings: Settings; default :func:`bcd.config.get_settings`.
        endpoint_url: Base URL of a ``bcd serve`` (e.g. ``http://127.0.0.1:8080``);
            default ``settings.endpoint_url`` (``BCD_ENDPOINT_URL``); unset means in-process.
        api_key: Key sent as ``Authorization: Bearer``; default ``BCD_API_KEY``.
        timeout: Seconds to wait for an HTTP answer.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        endpoint_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(settings)
        self.endpoint_url = (endpoint_url or self.settings.endpoint_url or "").rstrip("/") or None
        self.api_key = api_key or self.settings.api_key
        self.timeout = timeout

    def invoke_endpoint(
        self,
        EndpointName: str,
        ContentType: str,
        Body: Any,
        TargetVariant: str | None = None,
        Accept: str | None = None,
        TTA: bool | None = None,
    ) -> dict[str, Any]:
        """Score a request body on an endpoint.

        Args:
            EndpointName: The endpoint.
            ContentType: ``application/x-image``, ``image/png``, ``image/jpeg``,
                ``image/tiff``, ``application/json``, ``multipart/form-data; boundary=…``
                or ``application/x-npy``.
            Body: The request body: bytes or a binary file object.
            TargetVariant: Pin a production variant by name.
            Accept: ``text/plain`` for the message alone; JSON otherwise.
            TTA: Average the 8 rotations/mirrors; ``None`` follows the model.

        Returns:
            ``{"Body": stream with .read(), "ContentType": str,
            "InvokedProductionVariant": str}``.

        Raises:
            NotFoundError: Unknown endpoint; UnknownVariantError for an unknown variant.
            UnsupportedMediaTypeError, InvalidInputError, PayloadTooLargeError: Bad body.
            NotReadyError: The endpoint is not loaded, or the server cannot be reached.
            AuthenticationError, PermissionDeniedError: Missing, unknown or revoked key.
        """
        body = _body_bytes(Body)
        if self.endpoint_url:
            return self._invoke_http(EndpointName, ContentType, body, TargetVariant, Accept, TTA)
        from bcd.serving import local_service

        invocation = local_service(self.settings).invoke_sync(
            EndpointName, ContentType, body, target_variant=TargetVariant, tta=TTA
        )
        content, content_type = invocation.render(Accept)
        return {
            "Body": io.BytesIO(content),
            "ContentType": content_type,
            "InvokedProductionVariant": invocation.variant,
        }

    def _invoke_http(
        self,
        name: str,
        content_type: str,
        body: bytes,
        variant: str | None,
        accept: str | None,
        tta: bool | None,
    ) -> dict[str, Any]:
        url = f"{self.endpoint_url}/endpoints/{urllib.parse.quote(name, safe='')}/invocations"
        if tta is not None:
            url += f"?tta={'true' if tta else 'false'}"
        headers = {"Content-Type": content_type, "Accept": accept or "application/json"}
        if variant:
            headers["X-Target-Variant"] = variant
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                content = response.read()
                return {
                    "Body": io.BytesIO(content),
                    "ContentType": response.headers.get("Content-Type", ""),
                    "InvokedProductionVariant": response.headers.get(
                        "X-Invoked-Production-Variant", ""
                    ),
                }
        except urllib.error.HTTPError as error:
            raise _error_from_response(error.code, error.read()) from None
        except (urllib.error.URLError, OSError) as error:
            raise NotReadyError(
                f"could not reach the bcd server at {self.endpoint_url} ({error}); "
                "is `bcd serve` running there?"
            ) from error


def _error_from_response(status: int, content: bytes) -> BcdError:
    from bcd.serving._http_errors import error_class_for

    try:
        detail = json.loads(content)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        return BcdError(f"the server answered HTTP {status}")
    return error_class_for(code)(message)
