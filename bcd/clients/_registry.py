"""Low-level client calls for models, endpoint configs and endpoints."""

from __future__ import annotations

from typing import Any

from bcd.clients._base import BaseClient, Waiter
from bcd.errors import InvalidInputError, NotFoundError

# SageMaker parameters that mean nothing on one machine; accepted so notebooks port.
_IGNORED = {
    "ExecutionRoleArn",
    "Tags",
    "EnableNetworkIsolation",
    "VpcConfig",
    "KmsKeyId",
    "DataCaptureConfig",
    "DeploymentConfig",
    "RetainAllVariantProperties",
}


def _check_extra(call: str, extra: dict[str, Any]) -> None:
    unknown = sorted(set(extra) - _IGNORED)
    if unknown:
        raise InvalidInputError(f"{call} got unknown parameter(s) {', '.join(unknown)}")


def _require(call: str, **values: Any) -> None:
    missing = [name for name, value in values.items() if value is None]
    if missing:
        raise InvalidInputError(f"{call} needs {', '.join(missing)}")


class RegistryMixin(BaseClient):
    """Client methods for models, endpoint configs and endpoints (boto3 shapes)."""

    def create_model(
        self,
        *,
        ModelName: str | None = None,
        PrimaryContainer: dict[str, Any] | None = None,
        TrainingJobName: str | None = None,
        HyperParameterTuningJobName: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Register a model from ``PrimaryContainer["ModelDataUrl"]`` (an artifact folder).

        bcd also takes ``TrainingJobName`` (a completed job's artifacts) or
        ``HyperParameterTuningJobName`` (its best job's artifacts) instead.

        Returns:
            ``{"ModelArn"}``.

        Raises:
            InvalidInputError: Missing name, not exactly one source, bad ``model.json``.
            NotFoundError: The artifact folder or job does not exist.
            ConflictError: The name is taken.
        """
        from bcd import registry

        _check_extra("create_model", extra)
        _require("create_model", ModelName=ModelName)
        container = PrimaryContainer or {}
        if not isinstance(container, dict):
            raise InvalidInputError("PrimaryContainer must be an object with ModelDataUrl")
        result = registry.create_model(
            str(ModelName),
            model_data=container.get("ModelDataUrl"),
            training_job=TrainingJobName,
            tuning_job=HyperParameterTuningJobName,
            settings=self.settings,
        )
        return {"ModelArn": result["ModelArn"]}

    def describe_model(self, *, ModelName: str) -> dict[str, Any]:
        """A model: ``ModelName``, ``ModelArn``, ``PrimaryContainer``, ``CreationTime``, …"""
        from bcd import registry

        return registry.describe_model(ModelName, settings=self.settings)

    def list_models(self, *, NameContains: str | None = None, **extra: Any) -> dict[str, Any]:
        """``{"Models": [{ModelName, ModelArn, CreationTime}]}``, newest first."""
        from bcd import registry

        _check_extra("list_models", {k: v for k, v in extra.items() if k not in _LIST_PAGING})
        return {"Models": registry.list_models(NameContains, settings=self.settings)}

    def delete_model(self, *, ModelName: str) -> dict[str, Any]:
        """Delete a model (refused while an endpoint config uses it)."""
        from bcd import registry

        registry.delete_model(ModelName, settings=self.settings)
        return {}

    def create_endpoint_config(
        self,
        *,
        EndpointConfigName: str | None = None,
        ProductionVariants: list[dict[str, Any]] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Store an endpoint config of production variants.

        Args:
            EndpointConfigName: Its name.
            ProductionVariants: ``[{VariantName, ModelName, InitialInstanceCount,
                InitialVariantWeight}]``.

        Returns:
            ``{"EndpointConfigArn"}``.
        """
        from bcd import registry

        _check_extra("create_endpoint_config", extra)
        _require(
            "create_endpoint_config",
            EndpointConfigName=EndpointConfigName,
            ProductionVariants=ProductionVariants,
        )
        return registry.create_endpoint_config(
            str(EndpointConfigName), ProductionVariants or [], settings=self.settings
        )

    def describe_endpoint_config(self, *, EndpointConfigName: str) -> dict[str, Any]:
        """A config: ``EndpointConfigName``, ``ProductionVariants``, ``CreationTime``."""
        from bcd import registry

        return registry.describe_endpoint_config(EndpointConfigName, settings=self.settings)

    def list_endpoint_configs(
        self, *, NameContains: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        """``{"EndpointConfigs": [{EndpointConfigName, EndpointConfigArn, CreationTime}]}``."""
        from bcd import registry

        _check_extra(
            "list_endpoint_configs", {k: v for k, v in extra.items() if k not in _LIST_PAGING}
        )
        return {
            "EndpointConfigs": registry.list_endpoint_configs(NameContains, settings=self.settings)
        }

    def delete_endpoint_config(self, *, EndpointConfigName: str) -> dict[str, Any]:
        """Delete a config (refused while an endpoint runs it)."""
        from bcd import registry

        registry.delete_endpoint_config(EndpointConfigName, settings=self.settings)
        return {}

    def create_endpoint(
        self,
        *,
        EndpointName: str | None = None,
        EndpointConfigName: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create an endpoint; it ends ``InService`` or ``Failed`` (see ``describe_endpoint``).

        Returns:
            ``{"EndpointArn"}``.
        """
        from bcd import registry

        _check_extra("create_endpoint", extra)
        _require(
            "create_endpoint", EndpointName=EndpointName, EndpointConfigName=EndpointConfigName
        )
        return registry.create_endpoint(
            str(EndpointName), str(EndpointConfigName), settings=self.settings
        )

    def describe_endpoint(self, *, EndpointName: str) -> dict[str, Any]:
        """``EndpointStatus``, ``FailureReason``, ``ProductionVariants`` with stats, ``Version``."""
        from bcd import registry

        return registry.describe_endpoint(EndpointName, settings=self.settings)

    def list_endpoints(
        self,
        *,
        NameContains: str | None = None,
        StatusEquals: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """``{"Endpoints": [{EndpointName, EndpointArn, EndpointStatus, …}]}``, newest first."""
        from bcd import registry

        _check_extra("list_endpoints", {k: v for k, v in extra.items() if k not in _LIST_PAGING})
        if StatusEquals is not None and StatusEquals not in registry.ENDPOINT_STATUSES:
            raise InvalidInputError(
                f"StatusEquals must be one of {', '.join(registry.ENDPOINT_STATUSES)}"
            )
        return {
            "Endpoints": registry.endpoint_summaries(
                NameContains, StatusEquals, settings=self.settings
            )
        }

    def update_endpoint(
        self,
        *,
        EndpointName: str | None = None,
        EndpointConfigName: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Move an ``InService`` endpoint to another config without dropping requests.

        Returns:
            ``{"EndpointArn"}``; a failed update leaves the old config serving and
            sets ``FailureReason``.
        """
        from bcd import registry

        _check_extra("update_endpoint", extra)
        _require(
            "update_endpoint", EndpointName=EndpointName, EndpointConfigName=EndpointConfigName
        )
        return registry.update_endpoint(
            str(EndpointName), str(EndpointConfigName), settings=self.settings
        )

    def delete_endpoint(self, *, EndpointName: str) -> dict[str, Any]:
        """Delete an endpoint; its config stays, so it can be created again."""
        from bcd import registry

        registry.delete_endpoint(EndpointName, settings=self.settings)
        return {}

    def _describe_endpoint_or_deleted(self, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.describe_endpoint(**kwargs)
        except NotFoundError:
            return {"EndpointStatus": "Deleted"}

    def _waiters(self) -> dict[str, Waiter]:
        waiters = super()._waiters()
        waiters["endpoint_in_service"] = Waiter(
            self.describe_endpoint, "EndpointStatus", {"InService"}, {"Failed"}
        )
        waiters["endpoint_deleted"] = Waiter(
            self._describe_endpoint_or_deleted, "EndpointStatus", {"Deleted"}, {"Failed"}
        )
        return waiters


# boto3 paging and sorting parameters: listings here are short and always whole.
_LIST_PAGING = {
    "MaxResults",
    "NextToken",
    "SortBy",
    "SortOrder",
    "CreationTimeBefore",
    "CreationTimeAfter",
}
