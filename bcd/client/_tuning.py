"""Low-level client calls for hyperparameter tuning jobs."""

from __future__ import annotations

from bcd.client._base import BaseClient


class TuningMixin(BaseClient):
    """Client methods for hyperparameter tuning jobs."""
