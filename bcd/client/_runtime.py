"""Low-level client calls for invoke_endpoint."""

from __future__ import annotations

from bcd.client._base import BaseClient


class RuntimeMixin(BaseClient):
    """Client methods for invoke_endpoint."""
