"""Image names for ``Estimator(image_uri=…)``, like ``sagemaker.image_uris``.

``retrieve("image-classification", region, "1")`` gives
``"bcd/image-classification:1"``: a name the :class:`~bcd.sdk.Estimator`
maps back to the algorithm. There are no container images; the region and
the other SageMaker arguments are accepted so ported notebooks run unchanged.
"""

from __future__ import annotations

import logging
from typing import Any

from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

__all__ = ["get_image_uri", "retrieve"]

# framework name → the bcd algorithm its image runs
_FRAMEWORKS = {
    "image-classification": "image-classification",
    "cnn": "cnn",
    "script": "script",
    "pytorch": "script",
}
_ACCEPTED = frozenset(
    {
        "py_version",
        "instance_type",
        "accelerator_type",
        "image_scope",
        "container_version",
        "distribution",
        "base_framework_version",
        "training_compiler_config",
        "model_id",
        "model_version",
        "hub_arn",
        "tolerate_vulnerable_model",
        "tolerate_deprecated_model",
        "sdk_version",
        "inference_tool",
        "serverless_inference_config",
        "sagemaker_session",
        "config_name",
        "model_type",
    }
)


def retrieve(
    framework: str, region: str | None = None, version: str | None = None, **kwargs: Any
) -> str:
    """The image name of a built-in algorithm (or, for ``pytorch``, of script mode).

    Args:
        framework: ``image-classification``, ``cnn``, ``script`` or ``pytorch``.
        region: Accepted and ignored (everything runs here).
        version: The tag (default ``latest``); recorded only.
        **kwargs: The other arguments of ``sagemaker.image_uris.retrieve``
            (``py_version``, ``instance_type``, ``image_scope``…), ignored.

    Returns:
        ``bcd/<algorithm>:<version>``.

    Raises:
        InvalidInputError: An unknown framework or keyword argument.
    """
    unknown = sorted(set(kwargs) - _ACCEPTED)
    if unknown:
        raise InvalidInputError(
            f"retrieve() got unknown argument(s) {', '.join(unknown)}; accepted: "
            f"framework, region, version, {', '.join(sorted(_ACCEPTED))}"
        )
    if framework not in _FRAMEWORKS:
        raise InvalidInputError(
            f"no bcd image for framework {framework!r}; choose one of {', '.join(_FRAMEWORKS)}"
        )
    if region is not None:
        logger.info("image_uris.retrieve: region %s has no effect in bcd", region)
    return f"bcd/{_FRAMEWORKS[framework]}:{version or 'latest'}"


def get_image_uri(region_name: str | None, repo_name: str, repo_version: str = "1") -> str:
    """SageMaker SDK v1's ``get_image_uri(region, "image-classification")``.

    Raises:
        InvalidInputError: An unknown algorithm.
    """
    return retrieve(repo_name, region_name, repo_version)
