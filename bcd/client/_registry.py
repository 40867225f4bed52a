"""Low-level client calls for models, endpoint configs and endpoints."""

from __future__ import annotations

from bcd.client._base import BaseClient


class RegistryMixin(BaseClient):
    """Client methods for models, endpoint configs and endpoints."""
