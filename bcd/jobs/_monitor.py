"""Watching a running job: metric scraping, instance sampling, batched metric writes."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import queue
import re
import socket
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from bcd.config import Settings
from bcd.db import utcnow
from bcd.jobs import _store
from bcd.jobs.executors._usage import InstanceUsage, ProcessTreeUsage, gpu_samples

logger = logging.getLogger(__name__)

_EPOCH = re.compile(r"\bepoch[=: ]\s*(\d+)", re.IGNORECASE)


class MetricScraper:
    """Turns log lines into metric values with ``{Name, Regex}`` definitions.

    The first capture group of a matching regex is the value. When the line
    also says ``epoch=<e>`` (as the built-in algorithms' ``#metric`` lines
    do), the point carries that epoch.

    Args:
        definitions: The job's metric definitions (already validated).
    """

    def __init__(self, definitions: Sequence[dict[str, str]]) -> None:
        self._definitions = [(item["Name"], re.compile(item["Regex"])) for item in definitions]

    def scrape(self, line: str) -> list[tuple[str, float, int | None]]:
        """``(name, value, epoch)`` for each definition that matches ``line``."""
        found: list[tuple[str, float, int | None]] = []
        epoch: int | None = None
        epoch_known = False
        for name, pattern in self._definitions:
            match = pattern.search(line)
            if match is None:
                continue
            try:
                value = float(match.group(1))
            except (TypeError, ValueError, IndexError):
                continue
            if not math.isfinite(value):
                continue
            if not epoch_known:
                epoch_match = _EPOCH.search(line)
                epoch = int(epoch_match.group(1)) if epoch_match else None
                epoch_known = True
            found.append((name, value, epoch))
        return found


class MetricWriter:
    """Buffers metric points and writes them in batches from one thread.

    One writer per job numbers each series' steps, so points arrive in the
    store in order and the store never has to read before it writes.

    Args:
        job_name: The job whose series these are.
        settings: Where the metadata store is.
        flush_interval_s: Longest a point waits before it is written.
    """

    def __init__(self, job_name: str, settings: Settings, flush_interval_s: float = 1.0) -> None:
        self._job_name = job_name
        self._settings = settings
        self._interval = flush_interval_s
        self._queue: queue.Queue[tuple[str, str, float, int | None, dt.datetime]] = queue.Queue()
        self._steps = _store.next_steps(job_name, settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metric-writer", daemon=True)
        self.count = 0

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def add(self, source: str, name: str, value: float, epoch: int | None = None) -> None:
        """Queue one point (thread-safe)."""
        self._queue.put((source, name, value, epoch, utcnow()))

    def _drain(self) -> None:
        points = []
        while True:
            try:
                source, name, value, epoch, timestamp = self._queue.get_nowait()
            except queue.Empty:
                break
            step = self._steps.get(name, 0)
            self._steps[name] = step + 1
            points.append((source, name, value, step, epoch, timestamp))
        if points:
            try:
                _store.add_metrics(self._job_name, points, self._settings)
                self.count += sum(1 for point in points if point[0] == "algorithm")
            except Exception:
                logger.exception("could not write %d metric points", len(points))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._drain()

    def close(self) -> None:
        """Write what is left and stop the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drain()


class InstanceSampler:
    """Samples CPU, memory, disk (and GPU when present) of a job's processes.

    Names follow SageMaker's instance metrics: ``CPUUtilization`` (percent,
    100 per busy core), ``MemoryUtilization`` (percent of the memory of the
    machines the instances run on), ``DiskUtilization`` (percent of the job
    folder's file system), ``GPUUtilization`` and ``GPUMemoryUtilization``;
    plus ``MemoryUsedMegabytes`` (resident memory of the job's processes).
    Each sample sums the instances: those on this machine are measured here
    (``pids``), the others report what their own node measured (``remote``).

    Args:
        pids: Called for the instance process ids to sample here (children included).
        workdir: The job folder, for disk usage.
        emit: Called with ``(name, value)`` for each sample.
        interval_s: Seconds between samples.
        remote: Called for the latest samples of instances measured on their nodes.
    """

    def __init__(
        self,
        pids: Callable[[], list[int]],
        workdir: Path,
        emit: Callable[[str, float], None],
        interval_s: float = 5.0,
        remote: Callable[[], list[InstanceUsage]] = list,
    ) -> None:
        self._pids = pids
        self._remote = remote
        self._workdir = workdir
        self._emit = emit
        self._interval = interval_s
        self._stop = threading.Event()
        self._usage = ProcessTreeUsage()
        self._thread = threading.Thread(target=self._run, name="instance-sampler", daemon=True)

    def start(self) -> None:
        """Start sampling in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop sampling."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sample(self) -> None:
        """Take one sample of every metric and emit it."""
        pids = self._pids()
        cpu, rss = self._usage.sample(pids)
        remote = self._remote()
        # Memory is a share of the machines the instances run on, each counted once.
        node_memory = {usage.node: usage.node_memory_bytes for usage in remote}
        gpus = [usage.gpu for usage in remote if usage.gpu]
        if pids or not remote:
            node_memory[socket.gethostname()] = psutil.virtual_memory().total
            local_gpu = gpu_samples()
            if local_gpu:
                gpus.append(local_gpu)
        cpu += sum(usage.cpu_percent for usage in remote)
        rss += sum(usage.memory_bytes for usage in remote)
        total = sum(node_memory.values())
        self._emit("CPUUtilization", cpu)
        self._emit("MemoryUtilization", 100.0 * rss / total if total else 0.0)
        self._emit("MemoryUsedMegabytes", rss / 2**20)
        with contextlib.suppress(OSError):
            self._emit("DiskUtilization", psutil.disk_usage(str(self._workdir)).percent)
        for name in sorted({name for values in gpus for name in values}):
            values = [item[name] for item in gpus if name in item]
            self._emit(name, sum(values) / len(values))

    def _run(self) -> None:
        self._usage.prime(self._pids())
        while not self._stop.wait(self._interval):
            try:
                self.sample()
            except Exception:
                logger.exception("instance metric sample failed")
