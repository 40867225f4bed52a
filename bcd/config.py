"""Settings, read from ``BCD_*`` environment variables (and ``.env``).

Nothing is read at import time: call :func:`get_settings` (cached) or build a
:class:`Settings` yourself and pass it down, as tests do.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration of bcd.

    Attributes:
        home: Root folder for local state (``BCD_HOME``, default ``./.bcd``).
        database_url: SQLAlchemy URL of the metadata store; default a SQLite
            file ``bcd.db`` in ``home``. PostgreSQL URLs work for many machines.
        artifact_root: fsspec URL under which job artifacts live; default
            ``home/artifacts``. ``s3://bucket/prefix`` needs ``bcd[s3]``.
        dataset_root: fsspec URL under which imported datasets live; default
            ``home/datasets``.
        job_stop_grace_s: Seconds a stopping training job gets between SIGTERM
            and SIGKILL (``BCD_JOB_STOP_GRACE_S``).
        job_sample_interval_s: Seconds between instance metric samples of a
            running training job (``BCD_JOB_SAMPLE_INTERVAL_S``).
        executor: Where training jobs run their instance processes
            (``BCD_EXECUTOR``): ``local`` (child processes of this machine)
            or ``ray`` (Ray actors, needs ``bcd[ray]``); see docs/cluster.md.
        ray_address: The Ray cluster of the ``ray`` executor
            (``BCD_RAY_ADDRESS``): ``auto``, ``ray://host:port``,
            ``host:port``, or unset for a local Ray head that bcd starts.
    """

    model_config = SettingsConfigDict(env_prefix="BCD_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".bcd"))
    database_url: str | None = None
    artifact_root: str | None = None
    dataset_root: str | None = None
    s3_endpoint_url: str | None = None

    log_level: str = "INFO"
    log_sensitive: bool = False

    host: str = "127.0.0.1"
    port: int = 8080
    default_endpoint: str = "bcd-default"
    require_api_key: bool | None = None
    max_body_bytes: int = 6 * 1024 * 1024
    max_image_pixels: int = 4096 * 4096
    # Decoded pixels of all images of one scoring request, counted from headers
    # before decoding (BCD_MAX_REQUEST_PIXELS): 4 × 4096², 192 MiB of RGB.
    max_request_pixels: int = Field(default=4 * 4096 * 4096, ge=1)
    max_slide_bytes: int = 4 * 1024**3
    request_timeout_s: float = 30.0
    # Connection limits of `bcd serve` (see docs/serving.md, "Timeouts and limits").
    header_timeout_s: float = Field(default=10.0, gt=0)
    keep_alive_s: float = Field(default=5.0, gt=0)
    max_connections: int | None = Field(default=1000, ge=1)
    slide_upload_timeout_s: float = Field(default=900.0, gt=0)
    # A zipped DICOM WSI series (POST /slides, bcd slide analyze): most entries, and most
    # bytes unpacked (declared and counted); unset: twice max_slide_bytes (see docs/slides.md).
    max_archive_entries: int = Field(default=1000, ge=1)
    max_archive_bytes: int | None = Field(default=None, ge=1)
    # Whole-slide analysis: grid cells per analysis, analyses that run at once.
    max_slide_tiles: int = Field(default=250_000, ge=1)
    slide_workers: int = Field(default=3, ge=1, le=16)
    # Failed API-key checks allowed per key id and per client address in the window.
    auth_failure_limit: int = Field(default=10, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    max_batch_size: int = 256
    max_batch_wait_ms: float = 2.0
    inference_threads: int | None = None
    # Server processes of `bcd serve` sharing its port (BCD_SERVE_WORKERS).
    serve_workers: int = Field(default=1, ge=1, le=64)
    # Where the runtime client sends invoke_endpoint (unset: in-process), and its key.
    endpoint_url: str | None = None
    api_key: str | None = None
    job_stop_grace_s: float = 30.0
    job_sample_interval_s: float = 5.0
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        """The metadata store URL, defaulting to SQLite in ``home``."""
        return self.database_url or f"sqlite:///{self.home / 'bcd.db'}"

    @property
    def resolved_max_archive_bytes(self) -> int:
        """Most bytes a zipped DICOM series may unpack to (default: 2 × ``max_slide_bytes``)."""
        return self.max_archive_bytes or 2 * self.max_slide_bytes

    @property
    def resolved_artifact_root(self) -> str:
        """Where job artifacts go (fsspec URL or local path)."""
        return self.artifact_root or str(self.home / "artifacts")

    @property
    def resolved_dataset_root(self) -> str:
        """Where imported datasets go (fsspec URL or local path)."""
        return self.dataset_root or str(self.home / "datasets")

    def child_env(self) -> dict[str, str]:
        """``BCD_*`` variables that hand these settings to a child process.

        Background processes (job supervisors, tuning drivers) are started with
        the caller's environment plus these, so they see the same store even
        when the caller built its settings in code rather than from the env.
        """
        env = {
            "BCD_HOME": str(self.home),
            "BCD_DATABASE_URL": self.resolved_database_url,
            "BCD_ARTIFACT_ROOT": self.resolved_artifact_root,
            "BCD_DATASET_ROOT": self.resolved_dataset_root,
        }
        if self.s3_endpoint_url:
            env["BCD_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        env["BCD_EXECUTOR"] = self.executor
        if self.ray_address:
            env["BCD_RAY_ADDRESS"] = self.ray_address
        return env

    def storage_options(self) -> dict[str, object]:
        """fsspec keyword arguments for remote URLs (the S3 endpoint, when set)."""
        if self.s3_endpoint_url:
            return {"client_kwargs": {"endpoint_url": self.s3_endpoint_url}}
        return {}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
