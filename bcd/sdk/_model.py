"""``Model``: register artifacts and deploy them to an endpoint, like the SageMaker SDK."""

from __future__ import annotations

import logging
from typing import Any

from bcd.config import Settings, get_settings
from bcd.errors import ConflictError, InvalidInputError, JobFailedError
from bcd.names import validate_name
from bcd.sdk._predictor import Predictor

logger = logging.getLogger(__name__)


def unique_name(base: str) -> str:
    """``base`` plus a UTC timestamp and a random suffix, within 63 characters."""
    from bcd.jobs import unique_job_name

    return unique_job_name(base)


_DEPLOY_EXPLICIT = (
    "initial_instance_count",
    "instance_type",
    "endpoint_name",
    "wait",
    "variant_name",
    "update_endpoint",
)
_EXPLICIT = ("model_data", "image_uri", "role", "training_job", "tuning_job", "name", "settings")


class Model:
    """A model to deploy: artifacts from a folder, a training job or a tuning job.

    Takes the SageMaker SDK v2 ``Model`` arguments a notebook passes
    (``Model(model_data=…, image_uri=…, role=…)``): the image and role are
    recorded, the rest (``predictor_cls``, ``env``, ``sagemaker_session``…)
    kept in :attr:`sagemaker_arguments` and noted in the log.

    Args:
        model_data: A folder or fsspec URL holding ``model.onnx`` + ``model.json``.
        image_uri: The serving image; recorded (bcd serves every model with
            ONNX Runtime).
        role: SageMaker's IAM role; recorded, no effect.
        training_job: A completed training job whose artifacts to deploy.
        tuning_job: A tuning job whose best training job to deploy.
        name: The model's registry name; generated (``bcd-model-<time>``) if omitted.
            An existing model of that name is reused when no source is given.
        settings: Defaults to :func:`bcd.config.get_settings`.
        **sagemaker_arguments: Other SageMaker ``Model`` arguments, recorded.

    Raises:
        InvalidInputError: More than one source, a bad name, or an unknown
            keyword argument (the message lists the accepted ones).
    """

    def __init__(
        self,
        model_data: str | None = None,
        *,
        image_uri: str | None = None,
        role: str | None = None,
        training_job: str | None = None,
        tuning_job: str | None = None,
        name: str | None = None,
        settings: Settings | None = None,
        **sagemaker_arguments: Any,
    ) -> None:
        from bcd.sdk._sagemaker import MODEL_IGNORED, check_arguments, note_ignored

        self.sagemaker_arguments = check_arguments(
            "Model", sagemaker_arguments, MODEL_IGNORED, _EXPLICIT
        )
        note_ignored("Model", image_uri=image_uri, role=role)
        sources = [source for source in (model_data, training_job, tuning_job) if source]
        if len(sources) > 1:
            raise InvalidInputError("give at most one of model_data, training_job and tuning_job")
        if not sources and not name:
            raise InvalidInputError(
                "give model_data, training_job or tuning_job, or the name of a registered model"
            )
        self.model_data = str(model_data) if model_data else None
        self.image_uri = image_uri
        self.role = role
        self.training_job = training_job
        self.tuning_job = tuning_job
        self.name = validate_name(name, "model name") if name else unique_name("bcd-model")
        self.settings = settings or get_settings()
        self._created = not sources

    def create(self) -> str:
        """Register the model (once); returns its name.

        Raises:
            NotFoundError: The artifacts or job do not exist.
            ConflictError: Another model has this name.
        """
        from bcd import registry

        if not self._created:
            registry.create_model(
                self.name,
                model_data=self.model_data,
                training_job=self.training_job,
                tuning_job=self.tuning_job,
                settings=self.settings,
            )
            self._created = True
        return self.name

    def deploy(
        self,
        initial_instance_count: int = 1,
        instance_type: str | None = None,
        endpoint_name: str | None = None,
        wait: bool = True,
        variant_name: str = "AllTraffic",
        update_endpoint: bool = False,
        **sagemaker_arguments: Any,
    ) -> Predictor:
        """Create the model, an endpoint config and an endpoint; return a Predictor.

        Args:
            initial_instance_count: Worker replicas serving this model.
            instance_type: Accepted for SageMaker compatibility; ignored.
            endpoint_name: The endpoint's name (default: the model's name).
            wait: Raise if the endpoint did not reach ``InService``.
            variant_name: The production variant's name.
            update_endpoint: Move an existing endpoint of that name to this model
                instead of failing because it exists.
            **sagemaker_arguments: SageMaker ``deploy`` arguments with no effect
                here (``serializer``, ``deserializer``, ``tags``, ``kms_key``…), noted.

        Returns:
            A :class:`Predictor` bound to the endpoint.

        Raises:
            InvalidInputError: An unknown keyword argument.
            ConflictError: The endpoint exists and ``update_endpoint`` is False.
            JobFailedError: ``wait`` and the endpoint ended ``Failed``.
        """
        from bcd import registry
        from bcd.clients import Client
        from bcd.sdk._sagemaker import DEPLOY_IGNORED, check_arguments, note_ignored

        check_arguments("deploy", sagemaker_arguments, DEPLOY_IGNORED, _DEPLOY_EXPLICIT)
        note_ignored("deploy", instance_type=instance_type)
        endpoint_name = validate_name(endpoint_name or self.name, "endpoint name")
        existing = {
            row["EndpointName"]
            for row in registry.endpoint_summaries(endpoint_name, settings=self.settings)
        }
        exists = endpoint_name in existing
        configs = {
            row["EndpointConfigName"]
            for row in registry.list_endpoint_configs(endpoint_name, settings=self.settings)
        }
        config_name = endpoint_name if endpoint_name not in configs else unique_name(endpoint_name)
        variant = {
            "VariantName": variant_name,
            "ModelName": self.name,
            "InitialInstanceCount": initial_instance_count,
            "InitialVariantWeight": 1.0,
        }
        if exists and not update_endpoint:
            raise ConflictError(
                f"endpoint {endpoint_name!r} exists already; pass update_endpoint=True to "
                "move it to this model, or choose another endpoint_name"
            )
        self.create()
        registry.create_endpoint_config(config_name, [variant], settings=self.settings)
        if exists:
            registry.update_endpoint(endpoint_name, config_name, settings=self.settings)
        else:
            registry.create_endpoint(endpoint_name, config_name, settings=self.settings)
        if wait:
            Client(settings=self.settings).get_waiter("endpoint_in_service").wait(
                EndpointName=endpoint_name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 3000}
            )
            if exists:
                description = registry.describe_endpoint(endpoint_name, settings=self.settings)
                if description["EndpointConfigName"] != config_name:
                    raise JobFailedError(
                        f"update of endpoint {endpoint_name} failed: "
                        f"{description.get('FailureReason')}"
                    )
        logger.info("deployed model %s to endpoint %s", self.name, endpoint_name)
        return Predictor(endpoint_name, settings=self.settings)

    def transformer(
        self,
        instance_count: int = 1,
        instance_type: str = "local",
        strategy: str | None = None,
        assemble_with: str | None = None,
        output_path: str | None = None,
        output_kms_key: str | None = None,
        accept: str | None = None,
        env: dict[str, str] | None = None,
        max_concurrent_transforms: int | None = None,
        max_payload: int | None = None,
        tags: list[dict[str, str]] | None = None,
        volume_kms_key: str | None = None,
    ) -> Any:
        """Register the model (once) and return a :class:`bcd.sdk.Transformer` for it.

        The arguments are :class:`~bcd.sdk.Transformer`'s (SageMaker's names).
        """
        from bcd.sdk._transformer import Transformer

        return Transformer(
            self.create(),
            instance_count=instance_count,
            instance_type=instance_type,
            strategy=strategy,
            assemble_with=assemble_with,
            output_path=output_path,
            output_kms_key=output_kms_key,
            accept=accept,
            env=env,
            max_concurrent_transforms=max_concurrent_transforms,
            max_payload=max_payload,
            tags=tags,
            volume_kms_key=volume_kms_key,
            settings=self.settings,
        )
