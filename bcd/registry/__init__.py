"""The model registry: models, endpoint configs (production variants), endpoints, API keys.

Services take plain arguments and return dicts in boto3's SageMaker shapes
(``describe_endpoint`` → ``EndpointStatus``, ``ProductionVariants``, …); the
low-level client, the SDK and the CLI all call them. Serving uses the typed
contract: :func:`resolve_endpoint`, :func:`list_endpoints`,
:func:`record_invocations`, :func:`ensure_bundled_endpoint`, :func:`fail_endpoint`
(a model file that no longer matches its recorded SHA-256) and
:func:`bcd.registry.keys.verify_api_key`. :func:`verify_onnx` checks a model
file against its recorded digest for other loaders (``bcd evaluate``).
"""

from __future__ import annotations

from bcd.registry._artifacts import verify_onnx
from bcd.registry._bundled import (
    BUNDLED_ACCURATE_MODEL,
    BUNDLED_DEFAULT_VARIANT,
    BUNDLED_MODEL,
    ensure_bundled_endpoint,
    verify_bundled_model,
)
from bcd.registry._configs import (
    create_endpoint_config,
    delete_endpoint_config,
    describe_endpoint_config,
    list_endpoint_configs,
)
from bcd.registry._endpoints import (
    describe_endpoint,
    endpoint_summaries,
    list_endpoints,
    record_invocations,
    resolve_endpoint,
)
from bcd.registry._lifecycle import (
    create_endpoint,
    delete_endpoint,
    fail_endpoint,
    update_endpoint,
)
from bcd.registry._models import create_model, delete_model, describe_model, list_models
from bcd.registry._types import (
    CREATING,
    DELETING,
    ENDPOINT_STATUSES,
    FAILED,
    IN_SERVICE,
    UPDATING,
    ResolvedEndpoint,
    ResolvedVariant,
)

__all__ = [
    "BUNDLED_ACCURATE_MODEL",
    "BUNDLED_DEFAULT_VARIANT",
    "BUNDLED_MODEL",
    "CREATING",
    "DELETING",
    "ENDPOINT_STATUSES",
    "FAILED",
    "IN_SERVICE",
    "UPDATING",
    "ResolvedEndpoint",
    "ResolvedVariant",
    "create_endpoint",
    "create_endpoint_config",
    "create_model",
    "delete_endpoint",
    "delete_endpoint_config",
    "delete_model",
    "describe_endpoint",
    "describe_endpoint_config",
    "describe_model",
    "endpoint_summaries",
    "ensure_bundled_endpoint",
    "fail_endpoint",
    "list_endpoint_configs",
    "list_endpoints",
    "list_models",
    "record_invocations",
    "resolve_endpoint",
    "update_endpoint",
    "verify_bundled_model",
    "verify_onnx",
]
