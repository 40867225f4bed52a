"""High-level SDK, like the SageMaker Python SDK.

``Estimator`` trains, ``HyperparameterTuner`` tunes, ``Model`` deploys to an
endpoint and returns a ``Predictor``. Each lives in its own module and calls
the same services as :mod:`bcd.clients` and the CLI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Estimator", "HyperparameterTuner", "Model", "Predictor"]

_HOMES = {
    "Estimator": "bcd.sdk._estimator",
    "HyperparameterTuner": "bcd.sdk._tuner",
    "Model": "bcd.sdk._model",
    "Predictor": "bcd.sdk._predictor",
    "CategoricalParameter": "bcd.sdk._tuner",
    "IntegerParameter": "bcd.sdk._tuner",
    "ContinuousParameter": "bcd.sdk._tuner",
}


def __getattr__(name: str) -> Any:
    # Lazy, so `import bcd.sdk` stays light until a class is used.
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'bcd.sdk' has no attribute {name!r}")
