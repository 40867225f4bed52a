"""The training-job request: validated from SageMaker-style dicts into a plain spec.

:func:`parse_request` checks everything that can be checked before a process
starts (names, types, ranges, channels, algorithm and hyperparameters), so a
bad request is an :class:`~bcd.errors.InvalidInputError` with a message that
says what to fix, never a job that fails later for a reason known up front.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bcd.errors import InvalidInputError
from bcd.names import validate_name

TUNING_TAG = "bcd:tuning-job"
SCRIPT_ALGORITHM = "script"
PROGRAM_HP = "sagemaker_program"
SOURCE_DIR_HP = "sagemaker_submit_directory"
DEFAULT_MAX_RUNTIME_S = 86_400
MAX_INSTANCES = 16
_CHANNEL_NAME = re.compile(r"^[A-Za-z0-9\.\-_]{1,64}$")


@dataclass
class ChannelSpec:
    """One input channel: its name (``train``) and where the data is (a URI)."""

    name: str
    uri: str


@dataclass
class JobSpec:
    """A validated training-job request, stored as JSON on the job record.

    Attributes:
        name: The job name (unique, validated).
        algorithm: Built-in algorithm name, or ``"script"`` for script mode.
        hyperparameters: Hyperparameters as strings (SageMaker passes strings).
        metric_definitions: ``{"Name", "Regex"}`` pairs scraped from the log.
        channels: Input channels.
        instance_count: Processes to start (data-parallel when > 1).
        instance_type: Recorded as given (``local`` by default).
        volume_size_gb: Recorded as given.
        max_runtime_s: ``StoppingCondition.MaxRuntimeInSeconds``.
        input_mode: ``File`` or ``Pipe`` (recorded, passed as ``SM_INPUT_MODE``).
        output_path: ``OutputDataConfig.S3OutputPath`` or ``None`` for the
            artifact store.
        checkpoint_uri: Where checkpoints are synced (``CheckpointConfig.S3Uri``);
            ``None`` for the artifact store.
        checkpoint_source: A URI whose checkpoints are copied in before start.
        environment: Extra environment variables for the job's processes.
        tags: ``{"Key", "Value"}`` pairs.
        entry_point: Script mode: the script, relative to ``source_dir``.
        source_dir: Script mode: the folder copied into the job.
        executor: Where the instances run (``local`` or ``ray``, from
            ``BCD_EXECUTOR`` when the job was created).
        placements: Where each instance ran, as ``describe_training_job``
            shows it (``Executor.Instances``); filled in by the supervisor.
    """

    name: str
    algorithm: str
    hyperparameters: dict[str, str]
    metric_definitions: list[dict[str, str]]
    channels: list[ChannelSpec]
    instance_count: int = 1
    instance_type: str = "local"
    volume_size_gb: int = 30
    max_runtime_s: int = DEFAULT_MAX_RUNTIME_S
    input_mode: str = "File"
    output_path: str | None = None
    checkpoint_uri: str | None = None
    checkpoint_source: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    tags: list[dict[str, str]] = field(default_factory=list)
    entry_point: str | None = None
    source_dir: str | None = None
    executor: str = "local"
    placements: list[dict[str, Any]] = field(default_factory=list)

    @property
    def tuning_job_name(self) -> str | None:
        """The tuning job this job belongs to (tag ``bcd:tuning-job``), if any."""
        for tag in self.tags:
            if tag["Key"] == TUNING_TAG:
                return tag["Value"]
        return None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (what the job record stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        values["channels"] = [ChannelSpec(**channel) for channel in data["channels"]]
        return cls(**values)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"{key} must be a dict, got {type(value).__name__}")
    return value


def _positive_int(value: Any, key: str, maximum: int | None = None) -> int:
    if isinstance(value, bool):
        raise InvalidInputError(f"{key} must be a positive integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{key} must be a positive integer, got {value!r}") from None
    if number != value and not (isinstance(value, str) and value.strip().isdigit()):
        raise InvalidInputError(f"{key} must be a positive integer, got {value!r}")
    if number < 1:
        raise InvalidInputError(f"{key} must be at least 1, got {number}")
    if maximum is not None and number > maximum:
        raise InvalidInputError(f"{key} must be at most {maximum}, got {number}")
    return number


def _hyperparameters(value: Any) -> dict[str, str]:
    hyperparameters = _mapping(value, "HyperParameters")
    result: dict[str, str] = {}
    for key, item in hyperparameters.items():
        if not isinstance(key, str) or not key:
            raise InvalidInputError(f"hyperparameter names must be non-empty strings: {key!r}")
        if isinstance(item, dict | list | tuple | set) or item is None:
            raise InvalidInputError(
                f"hyperparameter {key!r} must be a string or number, got {item!r}"
            )
        # SageMaker passes hyperparameters as strings; so do we.
        result[key] = str(item).lower() if isinstance(item, bool) else str(item)
    return result


def _metric_definitions(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInputError("MetricDefinitions must be a list of {'Name', 'Regex'} dicts")
    definitions = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not item.get("Name") or not item.get("Regex"):
            raise InvalidInputError(
                f"MetricDefinitions[{index}] must have a non-empty 'Name' and 'Regex', got {item!r}"
            )
        try:
            compiled = re.compile(item["Regex"])
        except re.error as error:
            raise InvalidInputError(
                f"MetricDefinitions[{index}] ({item['Name']}): invalid regex "
                f"{item['Regex']!r}: {error}"
            ) from None
        if compiled.groups < 1:
            raise InvalidInputError(
                f"MetricDefinitions[{index}] ({item['Name']}): the regex needs a capture "
                "group around the value, e.g. 'loss=([0-9.]+)'"
            )
        definitions.append({"Name": str(item["Name"]), "Regex": str(item["Regex"])})
    return definitions


def _channel_uri(channel: dict[str, Any], index: int) -> str:
    if "Uri" in channel:
        uri = channel["Uri"]
    else:
        source = _mapping(channel.get("DataSource"), f"InputDataConfig[{index}].DataSource")
        s3 = source.get("S3DataSource") or source.get("FileSystemDataSource") or {}
        uri = s3.get("S3Uri") or s3.get("DirectoryPath")
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidInputError(
            f"InputDataConfig[{index}] needs a data location: "
            "{'DataSource': {'S3DataSource': {'S3Uri': URI}}} or {'Uri': URI}"
        )
    return uri.strip()


def _channels(value: Any) -> list[ChannelSpec]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInputError("InputDataConfig must be a list of channel dicts")
    channels: list[ChannelSpec] = []
    for index, channel in enumerate(value):
        if not isinstance(channel, dict):
            raise InvalidInputError(f"InputDataConfig[{index}] must be a dict")
        name = channel.get("ChannelName")
        if not isinstance(name, str) or not _CHANNEL_NAME.match(name):
            raise InvalidInputError(
                f"InputDataConfig[{index}].ChannelName must be 1-64 characters of "
                f"[A-Za-z0-9.-_], got {name!r}"
            )
        if any(existing.name == name for existing in channels):
            raise InvalidInputError(f"channel {name!r} is given twice in InputDataConfig")
        channels.append(ChannelSpec(name=name, uri=_channel_uri(channel, index)))
    return channels


# URL schemes whose fsspec implementation comes with a bcd extra.
_SCHEME_EXTRAS = {"s3": "s3", "s3a": "s3"}


def check_storage_url(url: str, key: str, *, channel: bool = False) -> None:
    """Refuse a data or output location no installed filesystem can open.

    Checked when a job is created, so a missing package fails the request
    instead of the job after training.

    Args:
        url: A local path, ``file://`` URL, fsspec URL, or (channels only)
            ``dataset://NAME/SPLIT``.
        key: The request field, for the message (``OutputDataConfig.S3OutputPath``).
        channel: Whether ``dataset://`` is allowed (input channels).

    Raises:
        InvalidInputError: An unknown URL scheme, or one whose package is not
            installed (the message names the extra to install, e.g. ``bcd[s3]``).
    """
    if "://" not in url:
        return
    scheme = url.split("://", 1)[0].lower()
    if scheme == "file" or (channel and scheme == "dataset"):
        return
    import fsspec

    try:
        fsspec.get_filesystem_class(scheme)
    except ImportError as error:
        extra = _SCHEME_EXTRAS.get(scheme)
        remedy = (
            f"install bcd[{extra}] (pip install 'bcd[{extra}]')"
            if extra
            else f"install the fsspec filesystem for {scheme}:// ({error})"
        )
        raise InvalidInputError(
            f"{key}: {url!r} is a {scheme}:// URL but its filesystem package is not "
            f"installed; {remedy}"
        ) from None
    except ValueError:
        kinds = "a local path, file://, s3:// (bcd[s3])"
        if channel:
            kinds += ", dataset://NAME/SPLIT"
        raise InvalidInputError(
            f"{key}: unknown URL scheme {scheme}:// in {url!r}; use {kinds} or another fsspec URL"
        ) from None


def check_data_locations(request: Mapping[str, Any], prefix: str = "") -> None:
    """:func:`check_storage_url` on every channel, output and checkpoint URL of a request.

    Args:
        request: A ``create_training_job`` request or a tuning job's
            ``TrainingJobDefinition`` (boto3 shapes); malformed entries are left
            to the request's own validation.
        prefix: Prepended to key paths (``TrainingJobDefinition.``).

    Raises:
        InvalidInputError: The first location that cannot be opened.
    """
    channels = request.get("InputDataConfig")
    for index, channel in enumerate(channels if isinstance(channels, list | tuple) else []):
        if not isinstance(channel, dict):
            continue
        try:
            uri = _channel_uri(channel, index)
        except InvalidInputError:
            continue
        check_storage_url(uri, f"{prefix}InputDataConfig[{index}]", channel=True)
    outputs = (("OutputDataConfig", "S3OutputPath"), ("CheckpointConfig", "S3Uri"))
    for section, field_name in outputs:
        value = request.get(section)
        url = value.get(field_name) if isinstance(value, dict) else None
        if url is not None and not isinstance(url, str):
            raise InvalidInputError(f"{prefix}{section}.{field_name} must be a string, got {url!r}")
        if url:
            check_storage_url(url.strip(), f"{prefix}{section}.{field_name}")


def _tags(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise InvalidInputError("Tags must be a list of {'Key', 'Value'} dicts")
    tags = []
    for index, tag in enumerate(value):
        if not isinstance(tag, dict) or not isinstance(tag.get("Key"), str) or not tag["Key"]:
            raise InvalidInputError(f"Tags[{index}] must be {{'Key': str, 'Value': str}}")
        tags.append({"Key": tag["Key"], "Value": str(tag.get("Value", ""))})
    return tags


def _algorithm_name(specification: dict[str, Any]) -> str:
    name = specification.get("AlgorithmName") or specification.get("TrainingImage")
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(
            "AlgorithmSpecification needs 'AlgorithmName' (image-classification, cnn, script) "
            "or 'TrainingImage'"
        )
    # A SageMaker image URI ("…/image-classification:1") names its algorithm last.
    return name.strip().rsplit("/", 1)[-1].split(":", 1)[0]


def parse_request(request: dict[str, Any]) -> JobSpec:
    """Validate a ``create_training_job`` request (boto3 keyword names).

    Args:
        request: ``TrainingJobName``, ``AlgorithmSpecification``, ``HyperParameters``,
            ``InputDataConfig``, ``OutputDataConfig``, ``ResourceConfig``,
            ``StoppingCondition``, ``CheckpointConfig``, ``Environment``, ``Tags``.
            ``CheckpointConfig`` also takes ``SourceTrainingJobName`` (resolved
            by the caller into ``checkpoint_source``).

    Returns:
        The spec; the algorithm and its hyperparameters are not checked here
        (see :func:`bcd.jobs._algorithms.prepare`).

    Raises:
        InvalidInputError: For any malformed or out-of-range field.
    """
    known = {
        "TrainingJobName",
        "AlgorithmSpecification",
        "HyperParameters",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "StoppingCondition",
        "CheckpointConfig",
        "Environment",
        "Tags",
        "RoleArn",
        "VpcConfig",
        "EnableNetworkIsolation",
    }
    unknown = sorted(set(request) - known)
    if unknown:
        raise InvalidInputError(
            f"unknown create_training_job argument(s) {unknown}; valid: {sorted(known)}"
        )
    name = validate_name(request.get("TrainingJobName", ""), "training job name")
    specification = _mapping(request.get("AlgorithmSpecification"), "AlgorithmSpecification")
    algorithm = _algorithm_name(specification)
    input_mode = specification.get("TrainingInputMode", "File")
    if input_mode not in ("File", "Pipe", "FastFile"):
        raise InvalidInputError(
            f"TrainingInputMode must be File, Pipe or FastFile, got {input_mode!r}"
        )
    resources = _mapping(request.get("ResourceConfig"), "ResourceConfig")
    stopping = _mapping(request.get("StoppingCondition"), "StoppingCondition")
    output = _mapping(request.get("OutputDataConfig"), "OutputDataConfig")
    checkpoint = _mapping(request.get("CheckpointConfig"), "CheckpointConfig")
    environment = _mapping(request.get("Environment"), "Environment")
    hyperparameters = _hyperparameters(request.get("HyperParameters"))
    check_data_locations(request)

    entry_point = source_dir = None
    if algorithm == SCRIPT_ALGORITHM:
        entry_point = hyperparameters.pop(PROGRAM_HP, None)
        source_dir = hyperparameters.pop(SOURCE_DIR_HP, None)
        entry_point, source_dir = _script_location(entry_point, source_dir)

    return JobSpec(
        name=name,
        algorithm=algorithm,
        hyperparameters=hyperparameters,
        metric_definitions=_metric_definitions(specification.get("MetricDefinitions")),
        channels=_channels(request.get("InputDataConfig")),
        instance_count=_positive_int(
            resources.get("InstanceCount", 1), "ResourceConfig.InstanceCount", MAX_INSTANCES
        ),
        instance_type=str(resources.get("InstanceType", "local")),
        volume_size_gb=_positive_int(
            resources.get("VolumeSizeInGB", 30), "ResourceConfig.VolumeSizeInGB"
        ),
        max_runtime_s=_positive_int(
            stopping.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME_S),
            "StoppingCondition.MaxRuntimeInSeconds",
        ),
        input_mode=input_mode,
        output_path=output.get("S3OutputPath") or None,
        checkpoint_uri=checkpoint.get("S3Uri") or None,
        checkpoint_source=checkpoint.get("SourceTrainingJobName") or None,
        environment={str(key): str(value) for key, value in environment.items()},
        tags=_tags(request.get("Tags")),
        entry_point=entry_point,
        source_dir=source_dir,
    )


def _script_location(entry_point: str | None, source_dir: str | None) -> tuple[str, str]:
    """Check a script-mode entry point and source folder; return them resolved."""
    if not entry_point:
        raise InvalidInputError(
            f"script mode needs the hyperparameter {PROGRAM_HP!r} (the entry point, e.g. "
            f"train.py) and {SOURCE_DIR_HP!r} (the folder that holds it)"
        )
    if source_dir is None:
        script = Path(entry_point).expanduser().resolve()
        source, entry = script.parent, script.name
    else:
        source, entry = Path(source_dir).expanduser().resolve(), entry_point
    if not source.is_dir():
        raise InvalidInputError(f"script source folder {str(source)!r} does not exist")
    if Path(entry).is_absolute() or ".." in Path(entry).parts:
        raise InvalidInputError(
            f"entry point {entry!r} must be a path relative to the source folder {str(source)!r}"
        )
    if not (source / entry).is_file():
        raise InvalidInputError(f"entry point {entry!r} is not a file in {str(source)!r}")
    return entry, str(source)


def unique_job_name(base: str) -> str:
    """A fresh job name: ``<base>-<UTC time>-<8 hex>``, cut to fit 63 characters.

    Args:
        base: A prefix such as the algorithm name (non-name characters become ``-``).
    """
    import datetime as dt
    import secrets

    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", base).strip("-") or "job"
    suffix = f"{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"
    return f"{cleaned[: 62 - len(suffix)].rstrip('-')}-{suffix}"
