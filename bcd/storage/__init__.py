"""Artifact and dataset storage behind fsspec URLs (local by default, ``s3://``)."""

from __future__ import annotations

from bcd.config import Settings, get_settings
from bcd.storage._base import BaseArtifactStore
from bcd.storage._fsspec import FsspecArtifactStore

__all__ = ["BaseArtifactStore", "FsspecArtifactStore", "artifact_store", "dataset_store"]


def artifact_store(settings: Settings | None = None) -> BaseArtifactStore:
    """The store for job artifacts, at ``settings.resolved_artifact_root``."""
    settings = settings or get_settings()
    return FsspecArtifactStore(settings.resolved_artifact_root, settings.storage_options())


def dataset_store(settings: Settings | None = None) -> BaseArtifactStore:
    """The store for imported datasets, at ``settings.resolved_dataset_root``."""
    settings = settings or get_settings()
    return FsspecArtifactStore(settings.resolved_dataset_root, settings.storage_options())
