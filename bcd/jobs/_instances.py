"""The instances of a job: their folders, environment (script-mode contract) and output.

Where an instance process runs is the executor's business
(:mod:`bcd.jobs.executors`); what it sees is decided here. Its stdout and
stderr reach the job log line by line through :class:`LogTee` (prefixed
``[algo-k]`` when there are several instances); the primary's lines feed the
metric scraper, and the last stderr lines of each instance are kept for a
``FailureReason`` a human can act on.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bcd.jobs._algorithms import hyperparameter_arguments, sm_hps
from bcd.jobs._spec import SCRIPT_ALGORITHM, JobSpec
from bcd.jobs.executors import BaseInstance, InstancePlacement


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for ``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class JobLayout:
    """Folders of a job under ``$BCD_HOME/jobs/<name>`` (SageMaker's ``/opt/ml`` layout)."""

    root: Path

    @property
    def input_config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def input_data(self) -> Path:
        return self.root / "input" / "data"

    @property
    def code(self) -> Path:
        return self.root / "code"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output(self) -> Path:
        return self.root / "output"

    def model_dir(self, rank: int) -> Path:
        """The primary writes the job's model; others get a private folder that is dropped."""
        return (
            self.root / "model"
            if rank == 0
            else self.root / "instances" / f"algo-{rank + 1}" / "model"
        )

    def output_data_dir(self, rank: int) -> Path:
        base = self.output if rank == 0 else self.root / "instances" / f"algo-{rank + 1}" / "output"
        return base / "data"


def instance_env(
    spec: JobSpec,
    layout: JobLayout,
    channels: dict[str, Path],
    placement: InstancePlacement,
    master: InstancePlacement,
    base_env: dict[str, str],
) -> dict[str, str]:
    """The environment of one instance under the script-mode contract.

    See "Training job contract" in docs/architecture.md.

    Args:
        spec: The job.
        layout: Its folders.
        channels: Channel name → local folder.
        placement: Where this instance runs (its rank, CPUs, GPUs).
        master: The primary's placement (``MASTER_ADDR``/``MASTER_PORT``).
        base_env: The environment to start from.
    """
    rank = placement.rank
    hosts = [f"algo-{index + 1}" for index in range(spec.instance_count)]
    num_cpus, num_gpus = placement.num_cpus, placement.num_gpus
    env = dict(base_env)
    env.update(spec.environment)
    env.setdefault("OMP_NUM_THREADS", str(num_cpus))
    model_dir, output_data_dir = layout.model_dir(rank), layout.output_data_dir(rank)
    training_env = {
        "job_name": spec.name,
        "hosts": hosts,
        "current_host": hosts[rank],
        "channel_input_dirs": {name: str(path) for name, path in channels.items()},
        "hyperparameters": json.loads(sm_hps(spec.hyperparameters)),
        "model_dir": str(model_dir),
        "output_data_dir": str(output_data_dir),
        "num_cpus": num_cpus,
        "num_gpus": num_gpus,
        "module_dir": str(layout.code) if spec.algorithm == SCRIPT_ALGORITHM else "",
        "user_entry_point": spec.entry_point or "",
    }
    env.update(
        {
            "SM_MODEL_DIR": str(model_dir),
            "SM_OUTPUT_DATA_DIR": str(output_data_dir),
            "SM_OUTPUT_DIR": str(layout.output),
            "SM_INPUT_DIR": str(layout.root / "input"),
            "SM_INPUT_CONFIG_DIR": str(layout.input_config),
            "SM_INPUT_DATA_CONFIG": json.dumps({name: {} for name in channels}),
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HOSTS": json.dumps(hosts),
            "SM_CURRENT_HOST": hosts[rank],
            "SM_NUM_CPUS": str(num_cpus),
            "SM_NUM_GPUS": str(num_gpus),
            "SM_HPS": sm_hps(spec.hyperparameters),
            "SM_USER_ARGS": json.dumps(hyperparameter_arguments(spec.hyperparameters)),
            "SM_TRAINING_ENV": json.dumps(training_env),
            "SM_INPUT_MODE": spec.input_mode,
            "BCD_CHECKPOINT_DIR": str(layout.checkpoints),
            "BCD_JOB_NAME": spec.name,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if spec.algorithm == SCRIPT_ALGORITHM:
        # The script imports its neighbours, as in SageMaker's /opt/ml/code.
        env["PYTHONPATH"] = os.pathsep.join(
            part for part in (str(layout.code), env.get("PYTHONPATH", "")) if part
        )
        env["SM_MODULE_DIR"] = str(layout.code)
        env["SM_USER_ENTRY_POINT"] = spec.entry_point or ""
    for name, path in channels.items():
        env[f"SM_CHANNEL_{name.upper().replace('-', '_').replace('.', '_')}"] = str(path)
    if spec.instance_count > 1:
        env.update(
            {
                "MASTER_ADDR": master.address,
                "MASTER_PORT": str(master.master_port),
                "RANK": str(rank),
                "WORLD_SIZE": str(spec.instance_count),
                # Every instance stands for a machine of its own: local rank 0.
                "LOCAL_RANK": "0",
            }
        )
    for key, value in placement.env.items():
        if key not in spec.environment:
            env[key] = value
    return env


class LogTee:
    """Writes instance output to the job log and hands the primary's lines on.

    Args:
        log_path: The job log (appended to).
        on_primary_line: Called with each line of instance ``algo-1``.
        prefix_hosts: Prefix lines with ``[algo-k]`` (several instances).
    """

    def __init__(
        self, log_path: Path, on_primary_line: Callable[[str], None], prefix_hosts: bool
    ) -> None:
        self._log = open(log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        self._lock = threading.Lock()
        self._on_primary_line = on_primary_line
        self._prefix_hosts = prefix_hosts

    def write(self, line: str) -> None:
        """Append a line of the engine's own to the log."""
        with self._lock:
            self._log.write(line.rstrip("\n") + "\n")

    def emit(self, instance: BaseInstance, line: str, is_stderr: bool) -> None:
        """Take one line of ``instance``'s output (an executor's ``on_line`` callback)."""
        prefix = f"[{instance.host}] " if self._prefix_hosts else ""
        with self._lock:
            self._log.write(prefix + line + "\n")
        if is_stderr:
            instance.stderr_tail.append(line)
        if instance.host == "algo-1":
            self._on_primary_line(line)

    def close(self) -> None:
        """Close the log file."""
        with self._lock:
            self._log.close()
