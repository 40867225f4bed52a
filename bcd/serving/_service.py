"""The inference service: request body in, rendered predictions out.

Routes and the in-process runtime client both call :class:`InferenceService`,
so they decode, route, score and answer identically.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bcd.config import Settings
from bcd.errors import BcdError, BcdTimeoutError, InvalidInputError, PayloadTooLargeError
from bcd.serving._decode import IMAGE_TYPES, decode_image, decode_request, media_type
from bcd.serving._router import EndpointRouter, LoadedVariant

logger = logging.getLogger(__name__)

CANCER_DETECTED = "Cancer detected"
CANCER_NOT_DETECTED = "Cancer not detected"
# Bodies above this are decoded in a worker thread, off the event loop; one
# image up to this size is decoded by the replica that scores it.
_INLINE_DECODE_BYTES = 64 * 1024


# The JSON of a verdict's fields, in Invocation.predictions() order.
_VERDICTS = {
    detected: json.dumps(
        {
            "predicted_class": int(detected),
            "cancer_detected": detected,
            "message": CANCER_DETECTED if detected else CANCER_NOT_DETECTED,
        }
    )[1:-1]
    for detected in (False, True)
}


@functools.lru_cache(maxsize=256)
def _document_tail(model: str, variant: str, threshold: float) -> str:
    """The ``"model", "variant", "threshold"`` members of an answer, as JSON."""
    return json.dumps({"model": model, "variant": variant, "threshold": threshold})[1:-1]


@dataclass(frozen=True)
class Invocation:
    """The answer to one request: probabilities ``(N, 2)``, who produced them, and the
    decision threshold on P(IDC) of that model."""

    endpoint: str
    model: str
    variant: str
    probabilities: np.ndarray
    threshold: float = 0.5

    @classmethod
    def of(cls, endpoint: str, variant: LoadedVariant, probabilities: np.ndarray) -> Invocation:
        """The answer of ``variant``, decided at its model's ``decision_threshold``."""
        return cls(
            endpoint,
            variant.model_name,
            variant.name,
            probabilities,
            variant.runtime.spec.decision_threshold,
        )

    def predictions(self) -> list[dict[str, object]]:
        """One dict per image: probabilities, predicted class, verdict and message.

        Cancer is detected when P(IDC) reaches the model's ``decision_threshold``.
        """
        rows = []
        for p0, p1 in self.probabilities.tolist():
            detected = p1 >= self.threshold
            rows.append(
                {
                    "probabilities": [p0, p1],
                    "predicted_class": int(detected),
                    "cancer_detected": detected,
                    "message": CANCER_DETECTED if detected else CANCER_NOT_DETECTED,
                }
            )
        return rows

    def document(self) -> dict[str, object]:
        """The JSON response; a single image's fields also appear at the top level."""
        predictions = self.predictions()
        document: dict[str, object] = {
            "predictions": predictions,
            "model": self.model,
            "variant": self.variant,
            "threshold": self.threshold,
        }
        if len(predictions) == 1:
            document.update(predictions[0])
        return document

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for an ``Accept`` header.

        ``text/plain`` gives the message alone (one line per image); anything
        else gives JSON.
        """
        if accept and media_type(accept) == "text/plain":
            text = "\n".join(str(row["message"]) for row in self.predictions())
            return text.encode(), "text/plain; charset=utf-8"
        if len(self.probabilities) == 1:
            single = self._single_json()
            if single is not None:
                return single, "application/json"
        return json.dumps(self.document()).encode(), "application/json"

    def _single_json(self) -> bytes | None:
        """``json.dumps(self.document())`` for one image, byte for byte, from cached
        pieces (the hot path's answer); ``None`` for probabilities JSON cannot hold."""
        ((p0, p1),) = self.probabilities.tolist()
        if not (math.isfinite(p0) and math.isfinite(p1)):
            return None
        # json.dumps writes floats with float.__repr__, as here.
        fields = f'"probabilities": [{p0!r}, {p1!r}], {_VERDICTS[p1 >= self.threshold]}'
        tail = _document_tail(self.model, self.variant, self.threshold)
        return f'{{"predictions": [{{{fields}}}], {tail}, {fields}}}'.encode()


class InferenceService:
    """Decodes request bodies and scores them on an endpoint's variants.

    Args:
        router: Loaded endpoints.
        settings: Image limits and the request timeout.
    """

    def __init__(self, router: EndpointRouter, settings: Settings) -> None:
        self.router = router
        self.settings = settings

    def _decode(self, content_type: str | None, body: bytes) -> list[np.ndarray]:
        return decode_request(
            content_type,
            body,
            max_image_pixels=self.settings.max_image_pixels,
            max_request_pixels=self.settings.max_request_pixels,
        )

    def _record(
        self, endpoint: str, variant: LoadedVariant, images: int, started: float, failed: bool
    ) -> None:
        self.router.metrics.record_invocation(
            endpoint, variant.name, images, time.perf_counter() - started, failed
        )

    async def invoke(
        self,
        endpoint: str,
        content_type: str | None,
        body: bytes,
        *,
        target_variant: str | None = None,
        tta: bool | None = None,
    ) -> Invocation:
        """Score a request body on an endpoint (asyncio).

        Raises:
            UnsupportedMediaTypeError, InvalidInputError, PayloadTooLargeError: Bad body.
            NotFoundError: Unknown endpoint; UnknownVariantError: unknown pinned variant.
            NotReadyError: The endpoint is not loaded.
            BcdTimeoutError: Scoring took longer than the request timeout.
        """
        images: list[np.ndarray] | None = None
        decode_one: Callable[[], np.ndarray] | None = None
        if media_type(content_type) in IMAGE_TYPES and len(body) <= _INLINE_DECODE_BYTES:
            # One small image (the hot path): the scoring worker decodes it.
            # One image: the request's pixel budget caps it too.
            limit = min(self.settings.max_image_pixels, self.settings.max_request_pixels)
            decode_one = functools.partial(decode_image, body, limit)
        elif len(body) > _INLINE_DECODE_BYTES:
            images = await asyncio.to_thread(self._decode, content_type, body)
        else:
            images = self._decode(content_type, body)
        router = self.router
        scoring = False
        try:
            try:
                loaded = router.acquire(endpoint)
            except BcdError:
                if not router.needs_refresh(endpoint):
                    raise
                await asyncio.to_thread(router.refresh, endpoint)
                loaded = router.acquire(endpoint)
            try:
                variant = router.choose(loaded, target_variant)
                scoring = True
                probabilities = await self._score(endpoint, variant, images, decode_one, tta)
            finally:
                router.release(loaded)
        except BcdError:
            # Decoding up front reports a bad body before an unknown endpoint or
            # variant; a deferred decode keeps that order.
            if not scoring and decode_one is not None:
                decode_one()
            raise
        return Invocation.of(endpoint, variant, probabilities)

    async def _score(
        self,
        endpoint: str,
        variant: LoadedVariant,
        images: list[np.ndarray] | None,
        decode_one: Callable[[], np.ndarray] | None,
        tta: bool | None,
    ) -> np.ndarray:
        """Probabilities from ``variant``, timed and counted (a bad body is not a failure)."""
        count = len(images) if images is not None else 1
        started = time.perf_counter()
        timeout = self.settings.request_timeout_s
        try:
            if decode_one is not None:
                probabilities = await variant.runtime.predict_one_async(decode_one, tta, timeout)
            else:
                assert images is not None
                probabilities = await variant.runtime.predict_async(images, tta, timeout)
        except (InvalidInputError, PayloadTooLargeError):
            raise  # only a deferred decode raises these: the body was bad, not the variant
        except TimeoutError as error:
            self._record(endpoint, variant, count, started, failed=True)
            raise self._timeout() from error
        except BaseException:
            self._record(endpoint, variant, count, started, failed=True)
            raise
        self._record(endpoint, variant, count, started, failed=False)
        return probabilities

    def _timeout(self) -> BcdTimeoutError:
        return BcdTimeoutError(
            f"scoring took longer than {self.settings.request_timeout_s} s; "
            "send fewer images per request or retry"
        )

    def invoke_sync(
        self,
        endpoint: str,
        content_type: str | None,
        body: bytes,
        *,
        target_variant: str | None = None,
        tta: bool | None = None,
    ) -> Invocation:
        """Blocking :meth:`invoke`, for the in-process client (same errors)."""
        images = self._decode(content_type, body)
        if self.router.needs_refresh(endpoint) and (
            not self.router.polling or not self.router.has(endpoint)
        ):
            self.router.refresh(endpoint)
        with self.router.use(endpoint) as loaded:
            variant = self.router.choose(loaded, target_variant)
            started = time.perf_counter()
            try:
                probabilities = variant.runtime.predict(
                    images, tta, timeout=self.settings.request_timeout_s
                )
            except TimeoutError as error:
                self._record(endpoint, variant, len(images), started, failed=True)
                raise self._timeout() from error
            except BaseException:
                self._record(endpoint, variant, len(images), started, failed=True)
                raise
            self._record(endpoint, variant, len(images), started, failed=False)
        return Invocation.of(endpoint, variant, probabilities)
