"""The body of an instance's Ray actor (see :mod:`._ray`).

A Ray worker receives this module by value (cloudpickle), so it imports only
the standard library and :mod:`._usage`, never bcd.jobs and its dependencies:
an instance's actor starts as fast as a bare Ray worker.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from bcd.jobs.executors._usage import ProcessTreeUsage, gpu_samples

_PR_SET_PDEATHSIG = 1


class ProcessActor:
    """The body of an instance's Ray actor: runs one command as its child and relays output.

    The command runs in a session of its own (its own process group, and its
    own CPU scheduling group under Linux's autogroup scheduling, as the
    supervisor of a local job has) and is killed when the actor's process
    dies. Its CPU and memory are sampled here, on its node, every
    ``sample_interval_s``.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lines: queue.Queue[tuple[bool, str] | None] = queue.Queue()
        self._open_streams = 0
        self._usage: dict[str, Any] | None = None
        self._usage_lock = threading.Lock()

    def node(self) -> dict[str, Any]:
        """Where this actor runs: host name, address, GPU ids, CPUs, and a free port."""
        import ray

        address = ray.util.get_node_ip_address()
        with socket.socket() as sock:
            sock.bind((address, 0))
            port = int(sock.getsockname()[1])
        return {
            "hostname": socket.gethostname(),
            "address": address,
            "gpu_ids": [str(gpu) for gpu in ray.get_gpu_ids()],
            "cpu_count": os.cpu_count() or 1,
            "free_port": port,
        }

    def start(
        self, command: list[str], cwd: str, env: dict[str, str], sample_interval_s: float = 0.0
    ) -> int:
        """Start the instance command; its pid."""
        launched: queue.Queue[subprocess.Popen[bytes] | BaseException] = queue.Queue()
        arm = _parent_death_signal()

        def launch() -> None:
            # The child gets SIGKILL when the thread that started it ends, so
            # that thread lives as long as the child.
            try:
                process = subprocess.Popen(
                    command,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=arm,  # only prctl, as Ray arms the processes it starts
                )
            except BaseException as error:
                launched.put(error)
                return
            launched.put(process)
            process.wait()

        threading.Thread(target=launch, name="instance", daemon=True).start()
        outcome = launched.get()
        if isinstance(outcome, BaseException):
            raise outcome
        process = self._process = outcome
        assert process.stdout is not None and process.stderr is not None
        for stream, is_stderr in ((process.stdout, False), (process.stderr, True)):
            self._open_streams += 1
            threading.Thread(target=self._pump, args=(stream, is_stderr), daemon=True).start()
        if sample_interval_s > 0:
            threading.Thread(
                target=self._sample, args=(process, sample_interval_s), daemon=True
            ).start()
        return process.pid

    def _pump(self, stream: Any, is_stderr: bool) -> None:
        for raw in iter(stream.readline, b""):
            self._lines.put((is_stderr, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        stream.close()
        self._lines.put(None)

    def _sample(self, process: subprocess.Popen[bytes], interval_s: float) -> None:
        import psutil

        tree = ProcessTreeUsage()
        tree.prime([process.pid])
        node, memory = socket.gethostname(), psutil.virtual_memory().total
        while process.poll() is None:
            time.sleep(interval_s)
            cpu, rss = tree.sample([process.pid])
            usage = {
                "node": node,
                "cpu_percent": cpu,
                "memory_bytes": rss,
                "node_memory_bytes": memory,
                "gpu": gpu_samples(),
            }
            with self._usage_lock:
                self._usage = usage

    def read(
        self, wait_s: float
    ) -> tuple[list[tuple[bool, str]], int | None, dict[str, Any] | None]:
        """Output lines so far (waiting up to ``wait_s`` for one), the exit code once
        the process has ended and every line has been read, and the resource sample
        taken since the last call (``None`` when there is none)."""
        lines: list[tuple[bool, str]] = []
        with contextlib.suppress(queue.Empty):
            item = self._lines.get(timeout=wait_s)
            while True:
                if item is None:
                    self._open_streams -= 1
                else:
                    lines.append(item)
                if len(lines) >= 2000:
                    break
                item = self._lines.get_nowait()
        code = None
        if self._process is not None and self._open_streams == 0 and self._lines.empty():
            code = self._process.wait()
        with self._usage_lock:
            usage, self._usage = self._usage, None
        return lines, code, usage

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the command's process group."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signum)

    def kill_leftovers(self) -> None:
        """SIGKILL the command's process group (once it ended, or on release)."""
        self.signal(signal.SIGKILL)


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child killed when its parent thread ends (Linux only).

    The C function is looked up here, in the parent: the child may only call it.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return arm
