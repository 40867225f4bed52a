"""A ``create_transform_job`` request (boto3's SageMaker shape), validated.

bcd reads these keys: ``TransformJobName``, ``ModelName``, ``TransformInput``
(``DataSource.S3DataSource.S3Uri`` or a plain ``Uri``, ``ContentType``,
``SplitType``), ``TransformOutput`` (``S3OutputPath``, ``Accept``),
``TransformResources`` (``InstanceType``, ``InstanceCount``),
``BatchStrategy``, ``MaxPayloadInMB``, ``MaxConcurrentTransforms``,
``Environment`` (``BCD_EXECUTOR=local|ray`` picks the executor) and ``Tags``.
The rest of SageMaker's keys are accepted and kept, unused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bcd.errors import InvalidInputError
from bcd.names import validate_name

#: Content types of the inputs bcd scores: patches (one image file or packed
#: patch per record) and whole slides (one slide file per record).
PATCH_CONTENT_TYPES = ("application/x-image", "image/png", "image/jpeg", "image/tiff")
SLIDE_CONTENT_TYPE = "application/x-slide"
ACCEPT_TYPES = {"text/csv": "results.csv", "application/json": "results.json"}
BATCH_STRATEGIES = ("MultiRecord", "SingleRecord")
EXECUTORS = ("local", "ray")
MAX_PAYLOAD_MB = 100
_KNOWN_KEYS = {
    "TransformJobName",
    "ModelName",
    "TransformInput",
    "TransformOutput",
    "TransformResources",
    "BatchStrategy",
    "MaxPayloadInMB",
    "MaxConcurrentTransforms",
    "Environment",
    "Tags",
    "ModelClientConfig",
    "DataProcessing",
    "DataCaptureConfig",
    "ExperimentConfig",
}


@dataclass(frozen=True)
class TransformSpec:
    """What a transform job does, parsed from its request.

    Attributes:
        name: The job's name.
        model_name: A registered model, a model folder, or an endpoint name.
        input_uri: ``dataset://NAME/SPLIT``, a folder of patches or of slides
            (local path or fsspec URL of a packed split).
        content_type: ``None`` (decided from the files), a patch image type
            or ``application/x-slide``.
        output_path: Folder the results go to (one per job).
        accept: ``text/csv`` or ``application/json``: the results file written.
        batch_strategy: ``MultiRecord`` (batches) or ``SingleRecord`` (one per call).
        max_payload_mb: Largest chunk of input, in MB of pixels, scored and
            written as one unit of progress.
        instance_count: Parallel workers (Ray tasks, or local replicas).
        instance_type: Kept for SageMaker compatibility.
        executor: ``local`` (this machine) or ``ray``.
        request: The request, local paths made absolute (for ``describe``).
    """

    name: str
    model_name: str
    input_uri: str
    content_type: str | None
    output_path: str
    accept: str
    batch_strategy: str
    max_payload_mb: int
    instance_count: int
    instance_type: str
    executor: str
    request: dict[str, Any]

    @property
    def results_file(self) -> str:
        """The file name of the assembled results (by ``accept``)."""
        return ACCEPT_TYPES[self.accept]


def _mapping(request: dict[str, Any], key: str, required: bool) -> dict[str, Any]:
    value = request.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{key} must be an object, not {type(value).__name__}")
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{key} must be a non-empty string")
    return value.strip()


def _input_uri(transform_input: dict[str, Any]) -> str:
    source = transform_input.get("DataSource")
    if source is None and "Uri" in transform_input:
        return _text(transform_input["Uri"], "TransformInput.Uri")
    if not isinstance(source, dict) or not isinstance(source.get("S3DataSource"), dict):
        raise InvalidInputError(
            "TransformInput needs DataSource.S3DataSource.S3Uri (or Uri): a folder of "
            "patches or slides, or dataset://NAME/SPLIT"
        )
    s3 = source["S3DataSource"]
    data_type = s3.get("S3DataType", "S3Prefix")
    if data_type != "S3Prefix":
        raise InvalidInputError(
            f"S3DataType {data_type!r} is not supported; use S3Prefix (a folder or dataset)"
        )
    return _text(s3.get("S3Uri"), "TransformInput.DataSource.S3DataSource.S3Uri")


def _absolute(uri: str) -> str:
    """A local path made absolute; URLs (``dataset://``, ``s3://``…) as given."""
    if "://" in uri.removeprefix("file://"):
        return uri
    return os.path.abspath(os.path.expanduser(uri.removeprefix("file://")))


def _count(value: Any, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{key} must be an integer from {low} to {high}, not {value!r}")
    return value


def _executor(environment: dict[str, Any], default: str) -> str:
    executor = str(environment.get("BCD_EXECUTOR") or default or "local").lower()
    if executor not in EXECUTORS:
        raise InvalidInputError(
            f"executor {executor!r} is unknown; use one of {', '.join(EXECUTORS)}"
        )
    return executor


def parse_request(request: dict[str, Any], default_executor: str = "local") -> TransformSpec:
    """Validate a ``create_transform_job`` request.

    Args:
        request: boto3 ``create_transform_job`` keyword arguments as a dict.
        default_executor: Used when ``Environment`` names none (``BCD_EXECUTOR``).

    Returns:
        The parsed job.

    Raises:
        InvalidInputError: A missing or malformed key; the message names it.
    """
    if not isinstance(request, dict):
        raise InvalidInputError("a transform job request must be an object")
    unknown = sorted(set(request) - _KNOWN_KEYS)
    if unknown:
        raise InvalidInputError(
            f"unknown keys {unknown} in the transform job request; known keys: "
            + ", ".join(sorted(_KNOWN_KEYS))
        )
    name = validate_name(request.get("TransformJobName"), "transform job name")  # type: ignore[arg-type]
    model_name = _text(request.get("ModelName"), "ModelName")
    transform_input = _mapping(request, "TransformInput", required=True)
    output = _mapping(request, "TransformOutput", required=True)
    resources = _mapping(request, "TransformResources", required=False)
    environment = _mapping(request, "Environment", required=False)
    content_type = transform_input.get("ContentType")
    if content_type is not None and content_type not in (*PATCH_CONTENT_TYPES, SLIDE_CONTENT_TYPE):
        raise InvalidInputError(
            f"ContentType {content_type!r} is not supported; use one of "
            + ", ".join((*PATCH_CONTENT_TYPES, SLIDE_CONTENT_TYPE))
        )
    split_type = transform_input.get("SplitType", "None")
    if split_type not in ("None", None):
        raise InvalidInputError(
            f"SplitType {split_type!r} is not supported: each image file, packed patch or "
            "slide is one record; use SplitType None"
        )
    accept = output.get("Accept", "text/csv")
    if accept not in ACCEPT_TYPES:
        raise InvalidInputError(
            f"TransformOutput.Accept {accept!r} is not supported; use one of "
            + ", ".join(ACCEPT_TYPES)
        )
    strategy = request.get("BatchStrategy", "MultiRecord")
    if strategy not in BATCH_STRATEGIES:
        raise InvalidInputError(
            f"BatchStrategy must be one of {', '.join(BATCH_STRATEGIES)}, not {strategy!r}"
        )
    output_path = _absolute(_text(output.get("S3OutputPath"), "TransformOutput.S3OutputPath"))
    input_uri = _absolute(_input_uri(transform_input))
    # Paths are stored absolute: the job's process runs in another folder.
    normalized = {
        **request,
        "TransformInput": {
            **{key: value for key, value in transform_input.items() if key != "Uri"},
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
        },
        "TransformOutput": {**output, "S3OutputPath": output_path},
    }
    return TransformSpec(
        name=name,
        model_name=model_name,
        input_uri=input_uri,
        content_type=content_type,
        output_path=output_path,
        accept=accept,
        batch_strategy=strategy,
        max_payload_mb=_count(request.get("MaxPayloadInMB", 6), "MaxPayloadInMB", 1, 100),
        instance_count=_count(
            resources.get("InstanceCount", 1), "TransformResources.InstanceCount", 1, 64
        ),
        instance_type=str(resources.get("InstanceType", "local")),
        executor=_executor(environment, default_executor),
        request=normalized,
    )
