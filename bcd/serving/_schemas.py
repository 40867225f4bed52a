"""Response and request shapes, for the OpenAPI document at ``/docs``.

Routes build their JSON directly (fast); these models describe it, with examples.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Prediction(BaseModel):
    """The verdict on one image."""

    probabilities: list[float] = Field(description="[P(no IDC), P(IDC)], summing to 1")
    predicted_class: int = Field(description="0 = no IDC, 1 = IDC")
    cancer_detected: bool
    message: str = Field(description='"Cancer detected" or "Cancer not detected"')


class InvocationResponse(BaseModel):
    """Predictions for every image of a request; one image's fields also at the top."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "predictions": [
                    {
                        "probabilities": [0.08, 0.92],
                        "predicted_class": 1,
                        "cancer_detected": True,
                        "message": "Cancer detected",
                    }
                ],
                "model": "bcd-bundled-accurate",
                "variant": "accurate",
                "threshold": 0.5,
                "probabilities": [0.08, 0.92],
                "predicted_class": 1,
                "cancer_detected": True,
                "message": "Cancer detected",
            }
        }
    )

    predictions: list[Prediction]
    model: str
    variant: str
    threshold: float = Field(
        0.5, description="the model's decision threshold: cancer is detected when P(IDC) >= it"
    )
    probabilities: list[float] | None = None
    predicted_class: int | None = None
    cancer_detected: bool | None = None
    message: str | None = None


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable code, e.g. unsupported_media_type")
    message: str = Field(description="What was wrong and what to do")


class ErrorResponse(BaseModel):
    """Every error answer."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "error": {
                    "code": "unsupported_media_type",
                    "message": "content type 'text/csv' is not accepted; send one of: …",
                }
            }
        }
    )

    error: ErrorDetail


_BINARY = {"schema": {"type": "string", "format": "binary"}}

# The request body of the scoring routes: every accepted content type, with examples.
SCORING_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "One image as raw bytes, a batch as JSON, multipart files or a .npy array. "
            "Patches smaller than the model input are padded (bottom/right, white); "
            "larger ones are centre-cropped."
        ),
        "content": {
            "application/x-image": _BINARY,
            "image/png": _BINARY,
            "image/jpeg": _BINARY,
            "image/tiff": _BINARY,
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "type": "object",
                            "properties": {
                                "instances": {
                                    "type": "array",
                                    "description": "H×W×3 arrays of numbers 0–255",
                                    "items": {"type": "array"},
                                }
                            },
                            "required": ["instances"],
                        },
                        {
                            "type": "object",
                            "properties": {"image": {"type": "string", "format": "byte"}},
                            "required": ["image"],
                        },
                        {
                            "type": "object",
                            "properties": {
                                "images": {
                                    "type": "array",
                                    "items": {"type": "string", "format": "byte"},
                                }
                            },
                            "required": ["images"],
                        },
                    ]
                },
                "examples": {
                    "base64": {
                        "summary": "one base64-encoded PNG",
                        "value": {"image": "iVBORw0KGgoAAAANSUhEUgAAADIAAAAy…"},
                    },
                    "instances": {
                        "summary": "pixel arrays (a 1×2 image shown)",
                        "value": {"instances": [[[[230, 180, 220], [120, 60, 150]]]]},
                    },
                },
            },
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "application/x-npy": {
                **_BINARY,
                "description": "numpy.save of a uint8 H×W×3 or N×H×W×3 array",
            },
        },
    }
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Undecodable image or wrong shape (invalid_input)",
        401: "Missing or unknown API key (unauthenticated)",
        403: "Revoked API key (permission_denied)",
        404: "Unknown endpoint (not_found) or variant (unknown_variant)",
        413: "Body or image over the limit (payload_too_large)",
        415: "Content type not accepted (unsupported_media_type)",
        503: "Endpoint not loaded yet (not_ready)",
        504: "Scoring took too long (timeout)",
    }.items()
}

SCORING_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InvocationResponse,
        "description": "Predictions (JSON), or the message alone with Accept: text/plain",
        "content": {"text/plain": {"example": "Cancer detected"}},
    },
    **ERROR_RESPONSES,
}
