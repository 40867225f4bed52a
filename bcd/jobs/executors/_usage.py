"""Resource use of instance processes, measured on the machine where they run.

The supervisor samples the instances it started itself (the ``local``
executor); a Ray instance's actor samples its own process on its node and
sends the samples along with its output (:mod:`._ray`). Both use
:class:`ProcessTreeUsage`. This module imports only the standard library and
psutil, so a Ray actor can carry it by value without importing the rest of bcd.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

import psutil


@dataclass(frozen=True)
class InstanceUsage:
    """One sample of an instance's processes on its node.

    Attributes:
        node: The machine they run on (host name).
        cpu_percent: CPU use of the process and its children (100 per busy core).
        memory_bytes: Their resident memory.
        node_memory_bytes: The node's memory.
        gpu: ``GPUUtilization`` / ``GPUMemoryUtilization`` of the node, when it has GPUs.
    """

    node: str
    cpu_percent: float
    memory_bytes: int
    node_memory_bytes: int
    gpu: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Plain values, to send between processes."""
        return {
            "node": self.node,
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "node_memory_bytes": self.node_memory_bytes,
            "gpu": dict(self.gpu),
        }

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> InstanceUsage:
        """The inverse of :meth:`to_dict`."""
        gpu = values.get("gpu") or {}
        assert isinstance(gpu, dict)
        return cls(
            node=str(values["node"]),
            cpu_percent=float(values["cpu_percent"]),  # type: ignore[arg-type]
            memory_bytes=int(values["memory_bytes"]),  # type: ignore[call-overload]
            node_memory_bytes=int(values["node_memory_bytes"]),  # type: ignore[call-overload]
            gpu={str(name): float(value) for name, value in gpu.items()},
        )


def gpu_samples() -> dict[str, float]:
    """GPU utilization and memory use of this machine (empty without ``nvidia-smi``)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        output = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu,memory.used,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    rows = [line.split(",") for line in output.strip().splitlines() if line.strip()]
    if not rows:
        return {}
    try:
        utilization = sum(float(row[0]) for row in rows)
        used = sum(float(row[1]) for row in rows)
        total = sum(float(row[2]) for row in rows)
    except (ValueError, IndexError):
        return {}
    return {
        "GPUUtilization": utilization,
        "GPUMemoryUtilization": 100.0 * used / total if total else 0.0,
    }


class ProcessTreeUsage:
    """CPU and memory of some processes and all their children, sample after sample.

    It keeps the ``psutil.Process`` objects between samples, because
    ``cpu_percent`` measures the time since the previous call on the same object.
    """

    def __init__(self) -> None:
        self._processes: dict[int, psutil.Process] = {}

    def _tree(self, pids: list[int]) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        for pid in pids:
            try:
                root = self._processes.get(pid) or psutil.Process(pid)
                found.append(root)
                found.extend(root.children(recursive=True))
            except psutil.Error:
                continue
        alive = {process.pid: self._processes.get(process.pid, process) for process in found}
        self._processes = alive
        return list(alive.values())

    def prime(self, pids: list[int]) -> None:
        """Start measuring CPU time (the first sample after this one is meaningful)."""
        for process in self._tree(pids):
            try:
                process.cpu_percent(None)
            except psutil.Error:
                continue

    def sample(self, pids: list[int]) -> tuple[float, int]:
        """``(cpu_percent, resident_bytes)`` of ``pids`` and their children since the last call."""
        cpu = 0.0
        rss = 0
        for process in self._tree(pids):
            try:
                cpu += process.cpu_percent(None)
                rss += process.memory_info().rss
            except psutil.Error:
                continue
        return cpu, rss
