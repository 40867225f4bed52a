"""The training job contract as seen from inside the process.

Reads the ``SM_*`` variables SageMaker's script mode defines and the ones bcd
adds (``BCD_CHECKPOINT_DIR``, ``BCD_JOB_NAME``, ``MASTER_ADDR``/``MASTER_PORT``/
``RANK``/``WORLD_SIZE``/``LOCAL_RANK``), sets torch's thread count so parallel
jobs do not oversubscribe the CPU, and joins the ``torch.distributed`` group.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bcd.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: Overrides ``SM_NUM_CPUS`` for the number of torch intra-op threads.
THREADS_ENV = "BCD_NUM_THREADS"


@dataclass(frozen=True)
class TrainingEnvironment:
    """Where a training process reads data and writes results.

    Attributes:
        model_dir: ``SM_MODEL_DIR``: the model artifacts (primary only).
        output_data_dir: ``SM_OUTPUT_DATA_DIR``: other outputs (history).
        channels: Channel name → local folder, from ``SM_CHANNEL_<NAME>``.
        checkpoint_dir: ``BCD_CHECKPOINT_DIR``, or ``None`` (no checkpoints).
        hosts: ``SM_HOSTS``.
        current_host: ``SM_CURRENT_HOST``.
        rank: This process's rank (``RANK``, else its index in ``hosts``).
        world_size: Number of processes (``WORLD_SIZE``, else ``len(hosts)``).
        local_rank: ``LOCAL_RANK`` (which GPU to use on a shared machine).
        num_gpus: ``SM_NUM_GPUS``, else the GPUs torch sees.
        num_threads: torch threads (``BCD_NUM_THREADS``, else ``SM_NUM_CPUS``).
        job_name: ``BCD_JOB_NAME``, when set.
    """

    model_dir: Path
    output_data_dir: Path
    channels: dict[str, Path] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    hosts: tuple[str, ...] = ("algo-1",)
    current_host: str = "algo-1"
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    num_gpus: int = 0
    num_threads: int | None = None
    job_name: str | None = None

    @property
    def is_primary(self) -> bool:
        """True for the process that writes the model and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when several processes train together."""
        return self.world_size > 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> TrainingEnvironment:
        """Read the contract from ``environ`` (default ``os.environ``).

        Raises:
            InvalidInputError: When ``SM_MODEL_DIR`` is missing or a variable is
                malformed (the message names it).
        """
        env = os.environ if environ is None else environ
        if not env.get("SM_MODEL_DIR"):
            raise InvalidInputError(
                "SM_MODEL_DIR is not set: run this through a bcd training job, or set "
                "SM_MODEL_DIR, SM_CHANNEL_TRAIN and SM_CHANNEL_VALIDATION yourself"
            )
        model_dir = Path(env["SM_MODEL_DIR"])
        channels = {
            key[len("SM_CHANNEL_") :].lower(): Path(value)
            for key, value in env.items()
            if key.startswith("SM_CHANNEL_") and value
        }
        hosts = tuple(_json_list(env, "SM_HOSTS") or ["algo-1"])
        current_host = env.get("SM_CURRENT_HOST", hosts[0])
        if current_host not in hosts:
            raise InvalidInputError(f"SM_CURRENT_HOST {current_host!r} is not in SM_HOSTS {hosts}")
        world_size = _int(env, "WORLD_SIZE", len(hosts))
        rank = _int(env, "RANK", hosts.index(current_host))
        if not 0 <= rank < world_size:
            raise InvalidInputError(f"RANK {rank} is outside WORLD_SIZE {world_size}")
        threads = env.get(THREADS_ENV) or env.get("SM_NUM_CPUS")
        num_threads = _int({"threads": threads}, "threads", 0) if threads else None
        checkpoint = env.get("BCD_CHECKPOINT_DIR")
        return cls(
            model_dir=model_dir,
            output_data_dir=Path(env.get("SM_OUTPUT_DATA_DIR") or model_dir.parent / "output"),
            channels=channels,
            checkpoint_dir=Path(checkpoint) if checkpoint else None,
            hosts=hosts,
            current_host=current_host,
            rank=rank,
            world_size=world_size,
            local_rank=_int(env, "LOCAL_RANK", 0),
            num_gpus=_int(env, "SM_NUM_GPUS", torch.cuda.device_count()),
            num_threads=num_threads if num_threads and num_threads > 0 else None,
            job_name=env.get("BCD_JOB_NAME") or None,
        )

    def channel(self, name: str) -> Path:
        """The folder of channel ``name``.

        Raises:
            InvalidInputError: If the job has no such channel.
        """
        if name not in self.channels:
            given = ", ".join(sorted(self.channels)) or "none"
            raise InvalidInputError(
                f"this algorithm needs a {name!r} channel (SM_CHANNEL_{name.upper()}); "
                f"the job has: {given}"
            )
        return self.channels[name]


def configure_threads(environment: TrainingEnvironment) -> int:
    """Set torch's intra-op threads from the environment; returns the count used."""
    if environment.num_threads:
        torch.set_num_threads(environment.num_threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        logger.debug("inter-op threads already fixed for this process")
    return torch.get_num_threads()


def select_device(environment: TrainingEnvironment) -> torch.device:
    """``cuda:<local_rank>`` when GPUs are granted and present, else the CPU."""
    if environment.num_gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", environment.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(environment: TrainingEnvironment, device: torch.device) -> None:
    """Join the process group (NCCL on GPU, gloo on CPU) when ``world_size > 1``.

    Raises:
        InvalidInputError: When ``MASTER_ADDR``/``MASTER_PORT`` are missing.
    """
    if not environment.distributed:
        return
    import torch.distributed as dist

    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise InvalidInputError(
                f"{name} must be set for a {environment.world_size}-process training job"
            )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=environment.rank,
        world_size=environment.world_size,
    )
    logger.info(
        "joined %s process group as rank %d of %d",
        backend,
        environment.rank,
        environment.world_size,
    )


def _json_list(env: Mapping[str, str], name: str) -> list[str] | None:
    text = env.get(name)
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise InvalidInputError(f"{name} must be a JSON list such as '[\"algo-1\"]'") from None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidInputError(f"{name} must be a non-empty JSON list of host names")
    return value


def _int(env: Mapping[str, str | None], name: str, default: int) -> int:
    text = env.get(name)
    if text in (None, ""):
        return default
    try:
        return int(str(text))
    except ValueError:
        raise InvalidInputError(f"{name}={text!r} must be an integer") from None
