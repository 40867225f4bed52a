"""The processes of a job: their environment (script-mode contract) and their output.

Each instance is one process in its own process group, so a stop reaches the
DataLoader workers it starts too. Its stdout and stderr are read line by line
into the job log (prefixed ``[algo-k]`` when there are several instances); the
primary's lines feed the metric scraper, and the last stderr lines of each
instance are kept for a ``FailureReason`` a human can act on.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from bcd.jobs._algorithms import hyperparameter_arguments, sm_hps
from bcd.jobs._spec import SCRIPT_ALGORITHM, JobSpec

STDERR_TAIL_LINES = 12


def free_port() -> int:
    """A TCP port free on loopback now (for ``MASTER_PORT``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gpu_count() -> int:
    """GPUs visible to this machine (0 without ``nvidia-smi``)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        output = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=5, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in output.splitlines() if line.startswith("GPU "))


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
    rank: int,
    master_port: int,
    num_gpus: int,
    base_env: dict[str, str],
) -> dict[str, str]:
    """The environment of instance ``rank`` under the script-mode contract.

    See "Training job contract" in docs/architecture.md.
    """
    hosts = [f"algo-{index + 1}" for index in range(spec.instance_count)]
    num_cpus = max(1, (os.cpu_count() or 1) // spec.instance_count)
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
            "SM_NUM_GPUS": str(num_gpus if spec.instance_count == 1 else min(num_gpus, 1)),
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
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(master_port),
                "RANK": str(rank),
                "WORLD_SIZE": str(spec.instance_count),
                # Every instance stands for a machine of its own: local rank 0,
                # pinned to one GPU of this machine when there are several.
                "LOCAL_RANK": "0",
            }
        )
        if num_gpus > 1 and "CUDA_VISIBLE_DEVICES" not in spec.environment:
            env["CUDA_VISIBLE_DEVICES"] = str(rank % num_gpus)
    return env


@dataclass
class Instance:
    """One running process of a job."""

    host: str
    process: subprocess.Popen[bytes]
    stderr_tail: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=STDERR_TAIL_LINES)
    )
    readers: list[threading.Thread] = field(default_factory=list)

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def signal_group(self, signum: int) -> None:
        """Send ``signum`` to the instance's process group (its workers included)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)


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

    def follow(self, instance: Instance, stream: IO[bytes], is_stderr: bool) -> threading.Thread:
        """Start a thread that copies ``stream`` of ``instance`` line by line."""

        def pump() -> None:
            prefix = f"[{instance.host}] " if self._prefix_hosts else ""
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                with self._lock:
                    self._log.write(prefix + line + "\n")
                if is_stderr:
                    instance.stderr_tail.append(line)
                if instance.host == "algo-1":
                    self._on_primary_line(line)
            stream.close()

        thread = threading.Thread(target=pump, name=f"{instance.host}-log", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        """Close the log file."""
        with self._lock:
            self._log.close()


def start_instance(
    host: str, command: list[str], cwd: Path, env: dict[str, str], tee: LogTee
) -> Instance:
    """Start one instance process and its log readers."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        process_group=0,
        close_fds=True,
    )
    instance = Instance(host=host, process=process)
    assert process.stdout is not None and process.stderr is not None
    instance.readers = [
        tee.follow(instance, process.stdout, is_stderr=False),
        tee.follow(instance, process.stderr, is_stderr=True),
    ]
    return instance


def stop_instances(instances: list[Instance], grace_s: float) -> None:
    """SIGTERM every live instance, wait up to ``grace_s``, then SIGKILL what is left."""
    for instance in instances:
        if instance.returncode is None:
            instance.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(i.returncode is None for i in instances):
        time.sleep(0.1)
    for instance in instances:
        if instance.returncode is None:
            instance.signal_group(signal.SIGKILL)
            instance.process.wait()
    kill_leftover_workers(instances)


def kill_leftover_workers(instances: list[Instance]) -> None:
    """SIGKILL what is left in the process groups of ended instances (stray workers)."""
    for instance in instances:
        if instance.returncode is not None:
            instance.signal_group(signal.SIGKILL)
