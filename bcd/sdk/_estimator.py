"""``Estimator``: train a model the way the SageMaker Python SDK does.

Example:
    >>> estimator = Estimator(algorithm="cnn", hyperparameters={"epochs": 5})
    >>> estimator.fit({"train": "dataset://idc/train", "validation": "dataset://idc/validation"})
    >>> estimator.model_data
    '/…/.bcd/artifacts/training-jobs/cnn-…/output/model'

Script mode: ``Estimator(entry_point="train.py", source_dir="src/",
metric_definitions=[{"Name": "validation:bac", "Regex": "val_bac=([0-9.]+)"}])``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, TYPE_CHECKING, Any

from bcd.config import Settings, get_settings
from bcd.errors import InvalidInputError, JobFailedError

if TYPE_CHECKING:
    from bcd.sdk._predictor import Predictor


class TrainingJob:
    """A handle on one training job started by an :class:`Estimator`.

    Args:
        name: The job name.
        client: The low-level client it was created with.
    """

    def __init__(self, name: str, client: Any) -> None:
        self.name = name
        self._client = client

    def __repr__(self) -> str:
        return f"TrainingJob(name={self.name!r})"

    def describe(self) -> dict[str, Any]:
        """The job's ``describe_training_job`` dict."""
        return dict(self._client.describe_training_job(TrainingJobName=self.name))

    def wait(self, logs: bool = True, stream: IO[str] | None = None) -> dict[str, Any]:
        """Block until the job ends, printing its log as it grows when ``logs``.

        Args:
            logs: Stream the job's log (stdout and stderr of its processes).
            stream: Where the log goes; default ``sys.stdout`` (a notebook cell).

        Returns:
            The final description.

        Raises:
            JobFailedError: The job ended ``Failed`` (the message is its FailureReason).
        """
        from bcd.jobs import follow_log

        if logs:
            out = stream or sys.stdout
            for line in follow_log(self.name, self._client.settings):
                out.write(line + "\n")
                out.flush()
            description = self.describe()
            if description["TrainingJobStatus"] == "Failed":
                raise JobFailedError(
                    f"training job {self.name} failed: {description.get('FailureReason')}"
                )
            return description
        waiter = self._client.get_waiter("training_job_completed_or_stopped")
        return dict(waiter.wait(TrainingJobName=self.name, WaiterConfig={"Delay": 1.0}))

    def stop(self) -> None:
        """Ask the job to stop (it keeps its last checkpoint)."""
        self._client.stop_training_job(TrainingJobName=self.name)


class Hyperparameters(dict[str, Any]):
    """The estimator's hyperparameters: a dict that, called, returns a copy.

    SageMaker's ``estimator.hyperparameters()`` is a method; bcd's is this
    dict, so both ``estimator.hyperparameters()`` and
    ``estimator.hyperparameters["epochs"]`` work.
    """

    def __call__(self) -> dict[str, Any]:
        return dict(self)


_EXPLICIT = (
    "algorithm",
    "role",
    "instance_count",
    "instance_type",
    "image_uri",
    "entry_point",
    "source_dir",
    "hyperparameters",
    "metric_definitions",
    "max_run",
    "volume_size",
    "input_mode",
    "checkpoint_s3_uri",
    "checkpoint_from_job",
    "output_path",
    "base_job_name",
    "environment",
    "tags",
    "sagemaker_session",
    "settings",
)


def _resolve_algorithm(
    algorithm: str | None, image_uri: str | None, entry_point: str | None
) -> str:
    """``algorithm`` or the one ``image_uri`` names; ``script`` in script mode."""
    from bcd.sdk._sagemaker import algorithm_from_image

    named = [algorithm_from_image(value) for value in (algorithm, image_uri) if value]
    if len(set(named)) > 1:
        raise InvalidInputError(
            f"algorithm {algorithm!r} and image_uri {image_uri!r} name different algorithms; "
            "give one of them"
        )
    resolved = named[0] if named else "script"
    if resolved == "script" and not entry_point:
        raise InvalidInputError(
            "give algorithm= or image_uri= (image-classification, cnn) or, for script mode, "
            "entry_point='train.py'"
        )
    if resolved != "script" and entry_point:
        raise InvalidInputError(
            f"entry_point is for script mode; algorithm {resolved!r} takes none"
        )
    return resolved


class Estimator:
    """Trains a built-in algorithm or a script-mode script as a bcd training job.

    Takes the SageMaker Python SDK v2 ``Estimator`` arguments, so a ported
    notebook runs unchanged: ``Estimator(image_uri, role, instance_count,
    instance_type, …)``. Arguments that mean nothing on one machine (``role``,
    ``sagemaker_session``, ``subnets``, KMS keys, spot settings…) are kept in
    :attr:`sagemaker_arguments` and noted in the log.

    Args:
        algorithm: ``"image-classification"`` or ``"cnn"`` (an image URI naming
            one also works); leave ``None`` with ``entry_point`` for script mode.
        role: SageMaker's IAM role; recorded (sent as ``RoleArn``), no effect.
        instance_count: Processes; more than 1 trains data-parallel.
        instance_type: Recorded as given.
        image_uri: A SageMaker-style image naming the algorithm
            (``…/image-classification:1``, see :func:`bcd.sdk.image_uris.retrieve`).
        entry_point: Script mode: the training script (relative to ``source_dir``).
        source_dir: Script mode: the folder copied into the job.
        hyperparameters: Name to value; sent as strings, like SageMaker does.
        metric_definitions: ``[{"Name", "Regex"}]`` scraped from the job's log
            (built-in algorithms bring their own).
        max_run: ``MaxRuntimeInSeconds``; the job is stopped after it.
        volume_size: ``ResourceConfig.VolumeSizeInGB``; recorded.
        input_mode: ``File``, ``Pipe`` or ``FastFile`` (``TrainingInputMode``).
        checkpoint_s3_uri: Where checkpoints are kept; a job started with a
            location that already holds checkpoints resumes from them.
        checkpoint_from_job: Start from the last checkpoint of this job.
        output_path: Where the model goes (default: the artifact store).
        base_job_name: Prefix of generated job names (default: the algorithm).
        environment: Extra environment variables for the job's processes.
        tags: ``[{"Key", "Value"}]`` put on every job.
        sagemaker_session: Accepted and ignored (bcd needs no session).
        settings: Defaults to :func:`bcd.config.get_settings`.
        **sagemaker_arguments: Other SageMaker ``Estimator`` arguments
            (``max_wait``, ``use_spot_instances``, ``subnets``…), recorded.

    Raises:
        InvalidInputError: Neither or both of an algorithm and ``entry_point``,
            an image naming no algorithm, or an unknown keyword argument (the
            message lists the accepted ones).
    """

    def __init__(
        self,
        algorithm: str | None = None,
        role: str | None = None,
        instance_count: int = 1,
        instance_type: str = "local",
        *,
        image_uri: str | None = None,
        entry_point: str | None = None,
        source_dir: str | None = None,
        hyperparameters: Mapping[str, Any] | None = None,
        metric_definitions: list[dict[str, str]] | None = None,
        max_run: int = 86_400,
        volume_size: int = 30,
        input_mode: str = "File",
        checkpoint_s3_uri: str | None = None,
        checkpoint_from_job: str | None = None,
        output_path: str | None = None,
        base_job_name: str | None = None,
        environment: Mapping[str, str] | None = None,
        tags: list[dict[str, str]] | None = None,
        sagemaker_session: Any = None,
        settings: Settings | None = None,
        **sagemaker_arguments: Any,
    ) -> None:
        from bcd.sdk._sagemaker import ESTIMATOR_IGNORED, check_arguments, note_ignored

        self.sagemaker_arguments = check_arguments(
            "Estimator", sagemaker_arguments, ESTIMATOR_IGNORED, _EXPLICIT
        )
        note_ignored("Estimator", role=role, sagemaker_session=sagemaker_session)
        if input_mode not in ("File", "Pipe", "FastFile"):
            raise InvalidInputError(
                f"input_mode must be File, Pipe or FastFile, got {input_mode!r}"
            )
        self.algorithm = _resolve_algorithm(algorithm, image_uri, entry_point)
        self.image_uri = image_uri
        self.role = role
        self.sagemaker_session = sagemaker_session
        self.entry_point = entry_point
        self.source_dir = source_dir
        self.hyperparameters = Hyperparameters(hyperparameters or {})
        self.instance_count = instance_count
        self.instance_type = instance_type
        self.metric_definitions = list(metric_definitions or [])
        self.max_run = max_run
        self.volume_size = volume_size
        self.input_mode = input_mode
        self.checkpoint_s3_uri = checkpoint_s3_uri
        self.checkpoint_from_job = checkpoint_from_job
        self.output_path = output_path
        self.base_job_name = base_job_name or self.algorithm
        self.environment = dict(environment or {})
        self.tags = list(tags or [])
        self.settings = settings or get_settings()
        self.latest_training_job: TrainingJob | None = None
        self._client: Any = None

    def _get_client(self) -> Any:
        if self._client is None:
            from bcd.clients import Client

            self._client = Client(settings=self.settings)
        return self._client

    def set_hyperparameters(self, **hyperparameters: Any) -> None:
        """Add or replace hyperparameters (SageMaker SDK style)."""
        self.hyperparameters.update(hyperparameters)

    def hyperparameters_for_job(self) -> dict[str, str]:
        """The ``HyperParameters`` of the next job (script mode adds its entry point)."""
        values = {key: str(value) for key, value in self.hyperparameters.items()}
        if self.algorithm == "script":
            values["sagemaker_program"] = str(self.entry_point)
            if self.source_dir is not None:
                values["sagemaker_submit_directory"] = str(self.source_dir)
        return values

    def training_job_request(self, inputs: Any, job_name: str) -> dict[str, Any]:
        """The ``create_training_job`` request :meth:`fit` sends.

        Args:
            inputs: A URI or :class:`~bcd.sdk.TrainingInput` for a single
                ``train`` channel, or a mapping of channel name to either.
            job_name: The job name.

        Raises:
            InvalidInputError: ``inputs`` of another shape.
        """
        request: dict[str, Any] = {
            "TrainingJobName": job_name,
            **self.training_job_definition(inputs),
            "HyperParameters": self.hyperparameters_for_job(),
            "Tags": self.tags,
        }
        del request["StaticHyperParameters"]
        checkpoint: dict[str, str] = {}
        if self.checkpoint_s3_uri:
            checkpoint["S3Uri"] = self.checkpoint_s3_uri
        if self.checkpoint_from_job:
            checkpoint["SourceTrainingJobName"] = self.checkpoint_from_job
        if checkpoint:
            request["CheckpointConfig"] = checkpoint
        return request

    def training_job_definition(self, inputs: Any) -> dict[str, Any]:
        """What every job of this estimator trains (a tuner's ``TrainingJobDefinition``).

        Args:
            inputs: As for :meth:`training_job_request`.
        """
        from bcd.sdk._sagemaker import channel_entries

        definition: dict[str, Any] = {
            "AlgorithmSpecification": {
                "AlgorithmName": self.algorithm,
                "TrainingInputMode": self.input_mode,
                "MetricDefinitions": self.metric_definitions,
            },
            "StaticHyperParameters": self.hyperparameters_for_job(),
            "InputDataConfig": channel_entries(inputs),
            "ResourceConfig": {
                "InstanceCount": self.instance_count,
                "InstanceType": self.instance_type,
                "VolumeSizeInGB": self.volume_size,
            },
            "StoppingCondition": {"MaxRuntimeInSeconds": self.max_run},
            "Environment": self.environment,
        }
        if self.output_path:
            definition["OutputDataConfig"] = {"S3OutputPath": self.output_path}
        if self.role:
            definition["RoleArn"] = str(self.role)
        return definition

    def fit(
        self,
        inputs: Any = None,
        wait: bool = True,
        logs: bool | str = True,
        job_name: str | None = None,
        experiment_config: Mapping[str, str] | None = None,
    ) -> TrainingJob:
        """Start a training job on ``inputs``; by default wait for it, streaming its log.

        The order of the arguments is the SageMaker SDK's.

        Args:
            inputs: ``{"train": URI, "validation": URI}`` (``dataset://NAME/SPLIT``,
                folders, fsspec URLs or :class:`~bcd.sdk.TrainingInput`), or one
                of them for ``train``.
            wait: Block until the job ends.
            logs: While waiting, print the job's log as it grows (``True`` or
                SageMaker's ``"All"``; ``False`` or ``"None"`` to wait quietly).
            job_name: Default: ``<base_job_name>-<time>-<id>``.
            experiment_config: Accepted and ignored (SageMaker Experiments).

        Returns:
            The job (also :attr:`latest_training_job`).

        Raises:
            InvalidInputError: A bad request (nothing is started).
            JobFailedError: ``wait`` and the job failed.
        """
        from bcd.jobs import unique_job_name
        from bcd.sdk._sagemaker import note_ignored

        note_ignored("Estimator.fit", experiment_config=experiment_config)
        name = job_name or unique_job_name(self.base_job_name)
        client = self._get_client()
        client.create_training_job(**self.training_job_request(inputs, name))
        self.latest_training_job = TrainingJob(name, client)
        if wait:
            self.latest_training_job.wait(logs=logs_wanted(logs))
        return self.latest_training_job

    def _require_job(self) -> TrainingJob:
        if self.latest_training_job is None:
            raise InvalidInputError("this estimator has not started a training job; call fit()")
        return self.latest_training_job

    @property
    def model_data(self) -> str | None:
        """Where the latest job's model is (``None`` until it has uploaded one)."""
        artifacts = self._require_job().describe().get("ModelArtifacts") or {}
        return artifacts.get("S3ModelArtifacts")

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str | None = None,
        endpoint_name: str | None = None,
        model_name: str | None = None,
        wait: bool = True,
        **sagemaker_arguments: Any,
    ) -> Predictor:
        """Register the latest job's model and serve it on an endpoint.

        Args:
            initial_instance_count: Serving workers.
            instance_type: Recorded as given.
            endpoint_name: Default: generated.
            model_name: Default: generated.
            wait: Wait until the endpoint is ``InService``.
            **sagemaker_arguments: SageMaker ``deploy`` arguments with no
                effect here (``serializer``, ``deserializer``, ``tags``…), noted.

        Returns:
            A :class:`~bcd.sdk.Predictor` on the endpoint.

        Raises:
            InvalidInputError: No job has been started, or an unknown argument.
            ConflictError: The job has not completed.
        """
        from bcd.sdk._model import Model

        job = self._require_job()
        model = Model(training_job=job.name, name=model_name, settings=self.settings)
        return model.deploy(
            initial_instance_count=initial_instance_count,
            instance_type=instance_type,
            endpoint_name=endpoint_name,
            wait=wait,
            **sagemaker_arguments,
        )


def logs_wanted(logs: bool | str) -> bool:
    """SageMaker's ``logs`` (``"All"``, ``"None"``, ``"Training"``…) or a bool, as a bool."""
    if isinstance(logs, str):
        return logs.strip().lower() not in ("none", "false", "")
    return bool(logs)
