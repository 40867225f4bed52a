"""``Transformer``: batch transform jobs, like the SageMaker SDK's.

``Transformer(model_name, instance_count, instance_type, output_path=…)
.transform(data, content_type=…, wait=True)`` scores every patch or slide of
``data`` (a folder, or ``dataset://NAME/SPLIT``) and writes the results to
``output_path``; ``Model.transformer(...)`` builds one for a model.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import InvalidInputError, JobFailedError
from bcd.names import validate_name

logger = logging.getLogger(__name__)

_ACTIVE = ("InProgress", "Stopping")


def _job_name(base: str) -> str:
    from bcd.jobs import unique_job_name

    return unique_job_name(base)


class Transformer:
    """Runs batch transform jobs for one model.

    Args:
        model_name: A registered model (or a model folder, or an endpoint name).
        instance_count: Parallel workers (Ray tasks with the ``ray`` executor).
        instance_type: Recorded for SageMaker compatibility.
        strategy: ``MultiRecord`` (default) or ``SingleRecord``.
        assemble_with: Accepted for SageMaker compatibility (results are one file).
        output_path: Folder or fsspec URL for the results; default
            ``<artifact root>/transform-jobs/<job name>``.
        output_kms_key: Accepted for SageMaker compatibility; ignored.
        accept: ``text/csv`` (default) or ``application/json``.
        max_concurrent_transforms: Recorded; ``instance_count`` sets the parallelism.
        max_payload: Megabytes of pixels per chunk (``MaxPayloadInMB``, default 6).
        tags: ``[{"Key", "Value"}]`` recorded with each job.
        env: Environment of the job; ``{"BCD_EXECUTOR": "ray"}`` runs it on Ray.
        base_transform_job_name: Prefix of generated job names.
        sagemaker_session: Accepted for SageMaker compatibility; ignored.
        volume_kms_key: Accepted for SageMaker compatibility; ignored.
        settings: Defaults to :func:`bcd.config.get_settings`.

    Raises:
        InvalidInputError: A bad instance count or strategy.
    """

    def __init__(
        self,
        model_name: str,
        instance_count: int = 1,
        instance_type: str = "local",
        strategy: str | None = None,
        assemble_with: str | None = None,
        output_path: str | None = None,
        output_kms_key: str | None = None,
        accept: str | None = None,
        max_concurrent_transforms: int | None = None,
        max_payload: int | None = None,
        tags: list[dict[str, str]] | None = None,
        env: dict[str, str] | None = None,
        base_transform_job_name: str | None = None,
        sagemaker_session: Any = None,
        volume_kms_key: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        del assemble_with, output_kms_key, sagemaker_session, volume_kms_key
        if isinstance(instance_count, bool) or not isinstance(instance_count, int):
            raise InvalidInputError(f"instance_count must be an integer, not {instance_count!r}")
        if strategy not in (None, "MultiRecord", "SingleRecord"):
            raise InvalidInputError(
                f"strategy must be MultiRecord or SingleRecord, not {strategy!r}"
            )
        self.model_name = model_name
        self.instance_count = instance_count
        self.instance_type = instance_type
        self.strategy = strategy
        self.output_path = output_path
        self.accept = accept
        self.max_concurrent_transforms = max_concurrent_transforms
        self.max_payload = max_payload
        self.tags = tags
        self.env = env
        self.base_transform_job_name = base_transform_job_name or "bcd-transform"
        self.settings = settings or get_settings()
        self.latest_transform_job: str | None = None

    def _client(self) -> Any:
        from bcd.clients import Client

        return Client(settings=self.settings)

    def _request(
        self, name: str, data: str, content_type: str | None, split_type: str | None
    ) -> dict[str, Any]:
        output_path = self.output_path or (
            f"{self.settings.resolved_artifact_root.rstrip('/')}/transform-jobs/{name}"
        )
        transform_input: dict[str, Any] = {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(data)}}
        }
        if content_type:
            transform_input["ContentType"] = content_type
        if split_type:
            transform_input["SplitType"] = split_type
        transform_output: dict[str, Any] = {"S3OutputPath": str(output_path)}
        if self.accept:
            transform_output["Accept"] = self.accept
        request: dict[str, Any] = {
            "TransformJobName": name,
            "ModelName": self.model_name,
            "TransformInput": transform_input,
            "TransformOutput": transform_output,
            "TransformResources": {
                "InstanceType": self.instance_type,
                "InstanceCount": self.instance_count,
            },
        }
        optional = {
            "BatchStrategy": self.strategy,
            "MaxPayloadInMB": self.max_payload,
            "MaxConcurrentTransforms": self.max_concurrent_transforms,
            "Environment": self.env,
            "Tags": self.tags,
        }
        request.update({key: value for key, value in optional.items() if value is not None})
        return request

    def transform(
        self,
        data: str,
        data_type: str = "S3Prefix",
        content_type: str | None = None,
        compression_type: str | None = None,
        split_type: str | None = None,
        job_name: str | None = None,
        wait: bool = True,
        logs: bool = True,
        **sagemaker_arguments: Any,
    ) -> None:
        """Start a transform job over ``data``; with ``wait``, block until it ends.

        Args:
            data: A folder of patches or slides, or ``dataset://NAME/SPLIT``.
            data_type: ``S3Prefix`` only (a folder or a dataset split).
            content_type: ``application/x-slide`` reads the folder as slides;
                an image type as patches; default: by the files.
            compression_type: ``None`` only.
            split_type: ``None`` only (one record per file or packed patch).
            job_name: The job's name (default: generated from the base name).
            wait: Block until the job ends.
            logs: Accepted for SageMaker compatibility (progress goes to the log).
            **sagemaker_arguments: ``input_filter``, ``output_filter``,
                ``join_source``, ``experiment_config``, ``model_client_config``,
                ``batch_data_capture_config``: accepted, unused.

        Raises:
            InvalidInputError: An unsupported ``data_type``, ``compression_type``
                or an unknown keyword argument.
            JobFailedError: ``wait`` and the job ended ``Failed``.
        """
        del logs
        accepted = {
            "input_filter",
            "output_filter",
            "join_source",
            "experiment_config",
            "model_client_config",
            "batch_data_capture_config",
        }
        unknown = sorted(set(sagemaker_arguments) - accepted)
        if unknown:
            raise InvalidInputError(
                f"Transformer.transform() got unknown arguments {unknown}; accepted besides "
                f"the named ones: {', '.join(sorted(accepted))}"
            )
        if data_type != "S3Prefix":
            raise InvalidInputError(f"data_type {data_type!r} is not supported; use S3Prefix")
        if compression_type not in (None, "None"):
            raise InvalidInputError("compressed input is not supported; pass compression_type=None")
        name = validate_name(job_name, "transform job name") if job_name else None
        name = name or _job_name(self.base_transform_job_name)
        self._client().create_transform_job(**self._request(name, data, content_type, split_type))
        self.latest_transform_job = name
        if self.output_path is None:
            self.output_path = self._client().describe_transform_job(TransformJobName=name)[
                "TransformOutput"
            ]["S3OutputPath"]
        logger.info("started transform job %s", name)
        if wait:
            self.wait()

    def _latest(self) -> str:
        if self.latest_transform_job is None:
            raise InvalidInputError("no transform job yet; call transform() first")
        return self.latest_transform_job

    def wait(self, logs: bool = True, poll_s: float = 0.5) -> dict[str, Any]:
        """Block until the latest job ends; returns its description.

        Raises:
            JobFailedError: It ended ``Failed``.
        """
        del logs
        name = self._latest()
        client = self._client()
        while True:
            description = client.describe_transform_job(TransformJobName=name)
            if description["TransformJobStatus"] not in _ACTIVE:
                break
            time.sleep(poll_s)
        if description["TransformJobStatus"] == "Failed":
            raise JobFailedError(f"transform job {name} failed: {description.get('FailureReason')}")
        return description  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        """The latest job's ``describe_transform_job`` dict."""
        return self._client().describe_transform_job(TransformJobName=self._latest())  # type: ignore[no-any-return]

    def stop_transform_job(self, wait: bool = True) -> None:
        """Stop the latest job (after the chunk it is scoring); with ``wait``, until it ends."""
        name = self._latest()
        self._client().stop_transform_job(TransformJobName=name)
        if wait:
            try:
                self.wait()
            except JobFailedError:
                logger.warning("transform job %s failed while stopping", name)

    @classmethod
    def attach(
        cls,
        transform_job_name: str,
        sagemaker_session: Any = None,
        settings: Settings | None = None,
    ) -> Transformer:
        """A Transformer bound to an existing job (its model and output path).

        Raises:
            NotFoundError: No such job.
        """
        del sagemaker_session
        from bcd.clients import Client

        description = Client(settings=settings).describe_transform_job(
            TransformJobName=transform_job_name
        )
        transformer = cls(
            description["ModelName"],
            instance_count=description["TransformResources"]["InstanceCount"],
            instance_type=description["TransformResources"]["InstanceType"],
            strategy=description["BatchStrategy"],
            output_path=description["TransformOutput"]["S3OutputPath"],
            accept=description["TransformOutput"]["Accept"],
            max_payload=description["MaxPayloadInMB"],
            env=description["Environment"] or None,
            settings=settings,
        )
        transformer.latest_transform_job = transform_job_name
        return transformer
