"""bcd: self-hosted IDC detection in H&E histopathology, with the ML lifecycle behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "client", "runtime_client"]

if TYPE_CHECKING:
    from bcd.clients import Client, RuntimeClient


def client(**kwargs: Any) -> Client:
    """The low-level, boto3-like client (``create_training_job`` and friends)."""
    from bcd.clients import Client

    return Client(**kwargs)


def runtime_client(**kwargs: Any) -> RuntimeClient:
    """The runtime client (``invoke_endpoint``), like boto3's ``sagemaker-runtime``."""
    from bcd.clients import RuntimeClient

    return RuntimeClient(**kwargs)
