"""Low-level, boto3-like clients: dicts in, dicts out, SageMaker's names.

:class:`Client` gathers one mixin per service (training, tuning, registry);
:class:`RuntimeClient` invokes endpoints. The CLI and :mod:`bcd.sdk` sit on
the same services. Each mixin adds its waiters by extending ``_waiters``.
"""

from __future__ import annotations

from bcd.clients._base import BaseClient, Waiter
from bcd.clients._registry import RegistryMixin
from bcd.clients._runtime import RuntimeMixin
from bcd.clients._training import TrainingMixin
from bcd.clients._transform import TransformMixin
from bcd.clients._tuning import TuningMixin

__all__ = ["BaseClient", "Client", "RuntimeClient", "Waiter"]


class Client(TrainingMixin, TuningMixin, RegistryMixin, TransformMixin):
    """``bcd.client()``: training, tuning, transform jobs; models, endpoint configs, endpoints."""


class RuntimeClient(RuntimeMixin):
    """``bcd.runtime_client()``: ``invoke_endpoint``."""
