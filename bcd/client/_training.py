"""Low-level client calls for training jobs."""

from __future__ import annotations

from bcd.client._base import BaseClient


class TrainingMixin(BaseClient):
    """Client methods for training jobs (create, describe, list, stop)."""
