"""High-level SDK, like the SageMaker Python SDK.

``Estimator`` trains, ``HyperparameterTuner`` tunes, ``Model`` deploys to an
endpoint and returns a ``Predictor``. Each lives in its own module and calls
the same services as :mod:`bcd.clients` and the CLI. They take the SageMaker
SDK v2 arguments a notebook passes (``image_uri``, ``role``,
``sagemaker_session``, ``TrainingInput`` channels…); see docs/jobs.md.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CategoricalParameter",
    "ContinuousParameter",
    "Estimator",
    "HyperparameterTuner",
    "IntegerParameter",
    "Model",
    "Predictor",
    "TrainingInput",
    "TrainingJob",
    "Transformer",
    "TuningAnalytics",
    "image_uris",
    "s3_input",
]

_HOMES = {
    "Estimator": "bcd.sdk._estimator",
    "TrainingJob": "bcd.sdk._estimator",
    "HyperparameterTuner": "bcd.sdk._tuner",
    "TuningAnalytics": "bcd.sdk._tuner",
    "Model": "bcd.sdk._model",
    "Predictor": "bcd.sdk._predictor",
    "CategoricalParameter": "bcd.sdk._tuner",
    "IntegerParameter": "bcd.sdk._tuner",
    "ContinuousParameter": "bcd.sdk._tuner",
    "TrainingInput": "bcd.sdk._sagemaker",
    "Transformer": "bcd.sdk._transformer",
}
# SageMaker SDK v1's name for TrainingInput.
_ALIASES = {"s3_input": "TrainingInput"}


def __getattr__(name: str) -> Any:
    # Lazy, so `import bcd.sdk` stays light until a class is used.
    import importlib

    if name == "image_uris":
        return importlib.import_module("bcd.sdk.image_uris")
    target = _ALIASES.get(name, name)
    if target in _HOMES:
        return getattr(importlib.import_module(_HOMES[target]), target)
    raise AttributeError(f"module 'bcd.sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names, which live in submodules until first used.
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
