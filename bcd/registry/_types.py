"""What the registry hands to serving: endpoints resolved to local model folders."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CREATING = "Creating"
IN_SERVICE = "InService"
UPDATING = "Updating"
DELETING = "Deleting"
FAILED = "Failed"

ENDPOINT_STATUSES = (CREATING, IN_SERVICE, UPDATING, DELETING, FAILED)
SERVABLE_STATUSES = (IN_SERVICE, UPDATING)


@dataclass(frozen=True)
class ResolvedVariant:
    """One production variant of an endpoint, ready to load.

    Attributes:
        variant_name: The variant's name, unique within its endpoint config.
        model_name: The registered model it serves.
        model_dir: A local folder holding ``model.onnx`` and ``model.json``
            (present whenever the endpoint is ``InService`` or ``Updating``).
        instance_count: How many worker replicas to run (``InitialInstanceCount``).
        weight: The variant's raw traffic weight (``InitialVariantWeight``, > 0);
            a variant gets ``weight / sum(weights)`` of unpinned traffic.
        onnx_sha256: The SHA-256 of the ONNX file recorded when the model was
            created; a loader checks the file against it once per load.
    """

    variant_name: str
    model_name: str
    model_dir: Path
    instance_count: int
    weight: float
    onnx_sha256: str = ""


@dataclass(frozen=True)
class ResolvedEndpoint:
    """An endpoint as the serving runtime sees it.

    Attributes:
        name: The endpoint's name.
        status: ``Creating``, ``InService``, ``Updating``, ``Deleting`` or ``Failed``.
        config_name: The endpoint config now taking traffic (during ``Updating``
            still the old one; the new one takes over when ``version`` bumps).
        version: Increases by one on every successful update; a router that
            sees a new version loads and warms the new variants before moving
            traffic to them.
        variants: The production variants of ``config_name``, in config order.
        failure_reason: Why the endpoint is ``Failed`` (or why its last update
            failed), when it is.
    """

    name: str
    status: str
    config_name: str
    version: int
    variants: list[ResolvedVariant] = field(default_factory=list)
    failure_reason: str | None = None

    @property
    def servable(self) -> bool:
        """Whether the endpoint should take traffic (``InService`` or ``Updating``)."""
        return self.status in SERVABLE_STATUSES
