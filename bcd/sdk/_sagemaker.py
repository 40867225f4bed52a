"""What a SageMaker Python SDK v2 notebook passes, understood or set aside.

A notebook written for SageMaker passes arguments that mean nothing on one
machine (``role``, ``sagemaker_session``, KMS keys, VPC settings) next to ones
that do (``image_uri``, ``volume_size``, ``input_mode``, channel objects).
This module turns channel objects into ``InputDataConfig`` entries, image
URIs into algorithm names, and checks the remaining keyword arguments: the
known SageMaker ones are kept on the object and noted in the log, an unknown
one is an :class:`~bcd.errors.InvalidInputError` listing what is accepted.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

BUILTIN_ALGORITHMS = ("image-classification", "cnn")
# Framework images run the user's script (script mode).
_SCRIPT_IMAGES = ("script", "pytorch", "pytorch-training", "bcd-script-mode")

# Accepted by Estimator and kept in ``sagemaker_arguments``; no effect here.
ESTIMATOR_IGNORED = frozenset(
    {
        "keep_alive_period_in_seconds",
        "volume_kms_key",
        "output_kms_key",
        "max_wait",
        "use_spot_instances",
        "subnets",
        "security_group_ids",
        "model_uri",
        "model_channel_name",
        "encrypt_inter_container_traffic",
        "enable_network_isolation",
        "checkpoint_local_path",
        "rules",
        "debugger_hook_config",
        "tensorboard_output_config",
        "enable_sagemaker_metrics",
        "profiler_config",
        "disable_profiler",
        "max_retry_attempts",
        "code_location",
        "dependencies",
        "git_config",
        "container_log_level",
        "framework_version",
        "py_version",
        "distribution",
        "instance_groups",
        "training_repository_access_mode",
        "training_repository_credentials_provider_arn",
        "container_entry_point",
        "container_arguments",
        "disable_output_compression",
        "enable_infra_check",
        "enable_remote_debug",
        "enable_session_tag_chaining",
    }
)
MODEL_IGNORED = frozenset(
    {
        "predictor_cls",
        "env",
        "vpc_config",
        "sagemaker_session",
        "enable_network_isolation",
        "model_kms_key",
        "image_config",
        "source_dir",
        "entry_point",
        "code_location",
        "container_log_level",
        "dependencies",
        "git_config",
        "framework_version",
        "py_version",
    }
)
DEPLOY_IGNORED = frozenset(
    {
        "serializer",
        "deserializer",
        "accelerator_type",
        "tags",
        "kms_key",
        "data_capture_config",
        "async_inference_config",
        "serverless_inference_config",
        "volume_size",
        "model_data_download_timeout",
        "container_startup_health_check_timeout",
        "inference_recommendation_id",
        "explainer_config",
        "use_compiled_model",
    }
)
TUNER_IGNORED = frozenset(
    {
        "max_runtime_in_seconds",
        "tags",
        "strategy_config",
        "completion_criteria_config",
        "estimator_name",
        "autotune",
        "hyperparameters_to_keep_static",
    }
)
TUNER_FIT_IGNORED = frozenset({"include_cls_metadata", "estimator_kwargs"})


def check_arguments(
    owner: str, given: Mapping[str, Any], ignored: frozenset[str], explicit: Iterable[str]
) -> dict[str, Any]:
    """Keep the known SageMaker arguments that bcd ignores; refuse unknown ones.

    Args:
        owner: What received them, for messages (``"Estimator"``).
        given: The extra keyword arguments.
        ignored: SageMaker argument names accepted without effect.
        explicit: The parameters ``owner`` takes by name (listed in the error).

    Returns:
        The accepted arguments (to record on the object).

    Raises:
        InvalidInputError: An argument neither bcd nor the SageMaker SDK knows.
    """
    unknown = sorted(set(given) - ignored)
    if unknown:
        accepted = ", ".join(sorted({*explicit, *ignored}))
        raise InvalidInputError(
            f"{owner}() got unknown argument(s) {', '.join(unknown)}; accepted: {accepted}"
        )
    for name in sorted(given):
        logger.info("%s: %s is a SageMaker setting with no effect in bcd; recorded", owner, name)
    return dict(given)


def note_ignored(owner: str, **values: Any) -> None:
    """Log, for each argument given (not ``None``), that bcd records but ignores it."""
    for name, value in values.items():
        if value is not None:
            logger.info(
                "%s: %s is a SageMaker setting with no effect in bcd; recorded", owner, name
            )


def algorithm_from_image(image_uri: str) -> str:
    """The bcd algorithm an image URI names.

    ``…/image-classification:1`` and ``bcd/cnn:latest`` name built-in
    algorithms; ``script`` and framework images (``pytorch…``) mean script mode.

    Raises:
        InvalidInputError: The image names no bcd algorithm.
    """
    if not isinstance(image_uri, str) or not image_uri.strip():
        raise InvalidInputError(f"image_uri must be a non-empty string, got {image_uri!r}")
    name = image_uri.strip().rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
    if name in BUILTIN_ALGORITHMS:
        return name
    if name in _SCRIPT_IMAGES or name.startswith("pytorch"):
        return "script"
    raise InvalidInputError(
        f"image_uri {image_uri!r} names no bcd algorithm; use one of "
        f"{', '.join(BUILTIN_ALGORITHMS)} (e.g. bcd.sdk.image_uris.retrieve('cnn')), "
        "or entry_point= for your own script"
    )


class TrainingInput:
    """One input channel's data, like ``sagemaker.inputs.TrainingInput``.

    Only ``s3_data`` decides what is read (``dataset://NAME/SPLIT``, a packed
    split or file-mode folder, or an fsspec URL); the other fields are kept in
    :attr:`config` as SageMaker sends them (bcd reads any layout it supports).

    Args:
        s3_data: Where the channel's data is.
        distribution: ``FullyReplicated`` or ``ShardedByS3Key``.
        compression: ``None`` or ``Gzip``.
        content_type: E.g. ``application/x-recordio``, ``application/x-image``.
        record_wrapping: ``None`` or ``RecordIO``.
        s3_data_type: ``S3Prefix``, ``ManifestFile`` or ``AugmentedManifestFile``.
        instance_groups: Recorded.
        input_mode: ``File``, ``Pipe`` or ``FastFile`` for this channel.
        attribute_names: Recorded (augmented manifests).
        target_attribute_name: Recorded.
        shuffle_config: Recorded (``{"Seed": n}`` in :attr:`config`).
    """

    def __init__(
        self,
        s3_data: str,
        distribution: str | None = None,
        compression: str | None = None,
        content_type: str | None = None,
        record_wrapping: str | None = None,
        s3_data_type: str = "S3Prefix",
        instance_groups: list[str] | None = None,
        input_mode: str | None = None,
        attribute_names: list[str] | None = None,
        target_attribute_name: str | None = None,
        shuffle_config: Any = None,
    ) -> None:
        if not isinstance(s3_data, str) or not s3_data.strip():
            raise InvalidInputError(f"TrainingInput needs s3_data (a data URI), got {s3_data!r}")
        if input_mode not in (None, "File", "Pipe", "FastFile"):
            raise InvalidInputError(
                f"TrainingInput input_mode must be File, Pipe or FastFile, got {input_mode!r}"
            )
        source: dict[str, Any] = {
            "S3DataType": s3_data_type,
            "S3Uri": s3_data.strip(),
            "S3DataDistributionType": distribution or "FullyReplicated",
        }
        if instance_groups:
            source["InstanceGroupNames"] = list(instance_groups)
        if attribute_names:
            source["AttributeNames"] = list(attribute_names)
        self.config: dict[str, Any] = {"DataSource": {"S3DataSource": source}}
        optional = {
            "CompressionType": compression,
            "ContentType": content_type,
            "RecordWrapperType": record_wrapping,
            "InputMode": input_mode,
            "TargetAttributeName": target_attribute_name,
        }
        self.config.update({key: value for key, value in optional.items() if value})
        if shuffle_config is not None:
            seed = getattr(shuffle_config, "seed", shuffle_config)
            self.config["ShuffleConfig"] = {"Seed": int(seed)}

    def __repr__(self) -> str:
        return f"TrainingInput({self.config['DataSource']['S3DataSource']['S3Uri']!r})"


def channel_entry(name: str, value: Any) -> dict[str, Any]:
    """The ``InputDataConfig`` entry of channel ``name``.

    Args:
        name: The channel name (``train``, ``validation``…).
        value: A URI string, a :class:`TrainingInput`, or any object with a
            SageMaker-style ``config`` dict (``sagemaker.inputs.TrainingInput``,
            ``FileSystemInput``).

    Raises:
        InvalidInputError: Anything else.
    """
    if isinstance(value, str):
        return {"ChannelName": name, "DataSource": {"S3DataSource": {"S3Uri": value}}}
    config = getattr(value, "config", None)
    if isinstance(config, Mapping) and isinstance(config.get("DataSource"), Mapping):
        entry = {"ChannelName": name, **dict(config)}
        extras = sorted(key for key in config if key != "DataSource")
        if extras:
            logger.info("channel %s: %s recorded; bcd reads the data as it finds it", name, extras)
        return entry
    raise InvalidInputError(
        f"channel {name!r}: expected a data URI or a TrainingInput, got {type(value).__name__}"
    )


def channel_entries(inputs: Any) -> list[dict[str, Any]]:
    """``InputDataConfig`` from what ``fit()`` receives.

    Args:
        inputs: ``None``; one URI or :class:`TrainingInput` (the ``train``
            channel); or a mapping of channel name to either.

    Raises:
        InvalidInputError: Any other shape.
    """
    if inputs is None:
        return []
    if isinstance(inputs, str) or hasattr(inputs, "config"):
        return [channel_entry("train", inputs)]
    if not isinstance(inputs, Mapping):
        raise InvalidInputError(
            "fit() inputs must be a data URI, a TrainingInput, or a mapping of channel name "
            "to either, e.g. {'train': 'dataset://idc/train', 'validation': "
            "'dataset://idc/validation'}"
        )
    return [channel_entry(str(name), value) for name, value in inputs.items()]
