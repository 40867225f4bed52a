"""The ``local`` executor: instance processes are children of the supervisor, on this machine.

Each instance is one process in its own process group, so a stop reaches the
DataLoader workers it starts too. The instances share the machine: each gets
``cpu_count // InstanceCount`` threads, and with several GPUs each instance is
pinned to one (``CUDA_VISIBLE_DEVICES``). ``ResourceConfig.InstanceType`` is
recorded, not enforced.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from bcd.jobs.executors._base import BaseExecutor, BaseInstance, InstancePlacement, LineSink

if TYPE_CHECKING:
    from bcd.jobs._spec import JobSpec

LOOPBACK = "127.0.0.1"


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


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def pump_lines(
    instance: BaseInstance, stream: IO[bytes], is_stderr: bool, on_line: LineSink
) -> threading.Thread:
    """Start a thread that hands ``stream`` to ``on_line`` line by line until it closes."""

    def pump() -> None:
        for raw in iter(stream.readline, b""):
            on_line(instance, raw.decode("utf-8", errors="replace").rstrip("\r\n"), is_stderr)
        stream.close()

    thread = threading.Thread(target=pump, name=f"{instance.host}-log", daemon=True)
    thread.start()
    return thread


class LocalInstance(BaseInstance):
    """An instance process started by this process (see :class:`BaseInstance`)."""

    def __init__(self, placement: InstancePlacement, process: subprocess.Popen[bytes]) -> None:
        super().__init__(placement)
        self.process = process
        self.readers: list[threading.Thread] = []

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    @property
    def local_pid(self) -> int | None:
        return self.process.pid

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)

    def kill_leftovers(self) -> None:
        if self.returncode is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    def join_output(self, timeout: float) -> None:
        for reader in self.readers:
            reader.join(timeout=timeout)


def start_process(
    placement: InstancePlacement,
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    on_line: LineSink,
    make: Callable[[InstancePlacement, subprocess.Popen[bytes]], LocalInstance] = LocalInstance,
) -> LocalInstance:
    """Start ``command`` in its own process group with piped output, and its line readers.

    Raises:
        OSError: The program could not be started.
    """
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
    instance = make(placement, process)
    assert process.stdout is not None and process.stderr is not None
    instance.readers = [
        pump_lines(instance, process.stdout, False, on_line),
        pump_lines(instance, process.stderr, True, on_line),
    ]
    return instance


class LocalExecutor(BaseExecutor):
    """Runs every instance as a child process of the supervisor on this machine."""

    name = "local"

    def reserve(
        self, spec: JobSpec, cancelled: Callable[[], bool]
    ) -> list[InstancePlacement] | None:
        count = spec.instance_count
        gpus = gpu_count()
        cpus = max(1, (os.cpu_count() or 1) // count)
        port = _free_loopback_port() if count > 1 else 0
        node = socket.gethostname()
        placements = []
        for rank in range(count):
            env: dict[str, str] = {}
            if count > 1 and gpus > 1:
                env["CUDA_VISIBLE_DEVICES"] = str(rank % gpus)
            placements.append(
                InstancePlacement(
                    rank=rank,
                    host=f"algo-{rank + 1}",
                    num_cpus=cpus,
                    num_gpus=gpus if count == 1 else min(gpus, 1),
                    node=node,
                    address=LOOPBACK,
                    master_port=port,
                    env=env,
                )
            )
        return placements

    def start(
        self,
        placement: InstancePlacement,
        command: list[str],
        cwd: Path,
        env: dict[str, str],
        on_line: LineSink,
    ) -> BaseInstance:
        return start_process(placement, command, cwd, env, on_line)
