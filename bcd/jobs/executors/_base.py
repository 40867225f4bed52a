"""The executor contract: where and how the instance processes of a training job run.

The job's supervisor (``python -m bcd.jobs.supervisor NAME``) stays the unit
that owns the job's status, log and metrics; an executor only places and runs
its instance processes. The supervisor calls, in order:

1. :meth:`BaseExecutor.reserve` — one :class:`InstancePlacement` per instance
   (blocks while the resources are busy, returns ``None`` when the job is
   stopped while waiting);
2. :meth:`BaseExecutor.start` for each placement, with the script-mode
   environment built from it — a :class:`BaseInstance` whose output lines
   reach the job log through a callback;
3. :meth:`BaseExecutor.close` once every instance has ended (releases what
   ``reserve`` held).

The service calls :meth:`BaseExecutor.check` when a job is created, so a
request the executor cannot run is refused before anything starts.
"""

from __future__ import annotations

import abc
import collections
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

    from bcd.jobs._spec import JobSpec
    from bcd.jobs.executors._usage import InstanceUsage

STDERR_TAIL_LINES = 12

#: A line of instance output: ``(instance, line, is_stderr)``.
LineSink = Callable[["BaseInstance", str, bool], None]


@dataclass(frozen=True)
class InstanceType:
    """What one instance of a SageMaker instance type gets: CPUs and GPUs."""

    cpus: int
    gpus: int = 0


#: SageMaker instance types mapped to executor resources (``ResourceConfig.InstanceType``).
#: ``local`` (the default) is not listed: it shares whatever the machine or node has.
INSTANCE_TYPES: dict[str, InstanceType] = {
    "ml.m5.large": InstanceType(2),
    "ml.m5.xlarge": InstanceType(4),
    "ml.m5.2xlarge": InstanceType(8),
    "ml.m5.4xlarge": InstanceType(16),
    "ml.c5.xlarge": InstanceType(4),
    "ml.c5.2xlarge": InstanceType(8),
    "ml.c5.4xlarge": InstanceType(16),
    "ml.g4dn.xlarge": InstanceType(4, 1),
    "ml.g4dn.2xlarge": InstanceType(8, 1),
    "ml.g5.xlarge": InstanceType(4, 1),
    "ml.g5.2xlarge": InstanceType(8, 1),
    "ml.g5.12xlarge": InstanceType(48, 4),
    "ml.p3.2xlarge": InstanceType(8, 1),
    "ml.p3.8xlarge": InstanceType(32, 4),
}
LOCAL_INSTANCE_TYPE = "local"


@dataclass(frozen=True)
class InstancePlacement:
    """Where one instance runs and what it may use.

    Attributes:
        rank: 0 for the primary (``algo-1``), 1… for the others.
        host: The script-mode host name, ``algo-<rank + 1>``.
        num_cpus: Threads the instance should use (``SM_NUM_CPUS``).
        num_gpus: GPUs it sees (``SM_NUM_GPUS``).
        node: The machine it runs on (host name).
        address: That machine's address as the other instances reach it
            (``MASTER_ADDR`` when this is the primary).
        master_port: A port free on that machine (used when this is the primary).
        env: Variables the executor adds (``CUDA_VISIBLE_DEVICES``).
    """

    rank: int
    host: str
    num_cpus: int
    num_gpus: int
    node: str
    address: str
    master_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def describe(self, executor: str) -> dict[str, Any]:
        """The placement as ``describe_training_job`` shows it (``Executor.Instances``)."""
        return {
            "Host": self.host,
            "Executor": executor,
            "Node": self.node,
            "Address": self.address,
            "Cpus": self.num_cpus,
            "Gpus": self.num_gpus,
        }


class BaseInstance(abc.ABC):
    """One running instance process of a job, wherever it runs.

    Thread safety: :attr:`returncode` and :meth:`signal` may be called from
    any thread while the instance's output is being delivered.

    Attributes:
        host: ``algo-k``.
        placement: Where it runs.
        stderr_tail: Its last stderr lines (for a ``FailureReason``).
        lost: Why the instance is gone without having exited (its Ray actor
            or node died), else ``None``; its :attr:`returncode` is then
            ``-SIGKILL``.
    """

    def __init__(self, placement: InstancePlacement) -> None:
        self.host = placement.host
        self.placement = placement
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self.lost: str | None = None

    @property
    @abc.abstractmethod
    def returncode(self) -> int | None:
        """``None`` while it runs; its exit code (negative: killed by that signal) after."""

    @property
    def local_pid(self) -> int | None:
        """Its process id when the supervisor samples it on this machine (instance
        metrics), else ``None``."""
        return None

    @property
    def usage(self) -> InstanceUsage | None:
        """The latest sample of its resource use taken on its own node, when the
        executor measures it there (instead of the supervisor, see :attr:`local_pid`)."""
        return None

    @abc.abstractmethod
    def signal(self, signum: int) -> None:
        """Send ``signum`` to the instance's process group; nothing once it has ended."""

    @abc.abstractmethod
    def kill_leftovers(self) -> None:
        """SIGKILL what is left of its process group once it has ended (stray workers)."""

    @abc.abstractmethod
    def join_output(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds until all its output has been delivered."""


def stop_instances(instances: list[BaseInstance], grace_s: float) -> None:
    """SIGTERM every live instance, wait up to ``grace_s``, then SIGKILL what is left."""
    for instance in instances:
        if instance.returncode is None:
            instance.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(i.returncode is None for i in instances):
        time.sleep(0.1)
    killed = [instance for instance in instances if instance.returncode is None]
    for instance in killed:
        instance.signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while killed and time.monotonic() < deadline and any(i.returncode is None for i in killed):
        time.sleep(0.05)
    for instance in instances:
        instance.kill_leftovers()


class BaseExecutor(abc.ABC):
    """Places and runs the instance processes of training jobs.

    One executor object serves one supervisor (one job); it is not shared
    between threads except for :meth:`BaseInstance.signal`.
    """

    #: The name ``BCD_EXECUTOR`` uses (``local``, ``ray``).
    name: ClassVar[str]

    def check(self, spec: JobSpec) -> None:  # noqa: B027 (optional hook)
        """Refuse, when the job is created, a request this executor cannot run.

        Raises:
            InvalidInputError: What is wrong and what to do (e.g. an unknown
                instance type).
        """

    @abc.abstractmethod
    def reserve(
        self, spec: JobSpec, cancelled: Callable[[], bool]
    ) -> list[InstancePlacement] | None:
        """Reserve one placement per instance, blocking until they are available.

        Args:
            spec: The job (instance count and type).
            cancelled: Polled while waiting; when it returns True, give up.

        Returns:
            The placements by rank, or ``None`` when cancelled while waiting.

        Raises:
            BcdError: The resources can never be had (the job fails with the
                message as a ``ClientError``), or the executor's backend cannot
                be reached.
        """

    @abc.abstractmethod
    def start(
        self,
        placement: InstancePlacement,
        command: list[str],
        cwd: Path,
        env: dict[str, str],
        on_line: LineSink,
    ) -> BaseInstance:
        """Start one instance process at its placement.

        Args:
            placement: From :meth:`reserve`.
            command: The program and its arguments.
            cwd: Its working folder.
            env: Its whole environment (the executor may add ``placement.env``).
            on_line: Called with each line of its stdout and stderr, in order
                per stream, from a thread of the executor's.

        Raises:
            OSError: The process could not be started.
            BcdError: The backend refused.
        """

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release what :meth:`reserve` held (after every instance has ended)."""

    def describe(self) -> str:
        """A short line saying where the instances run (for the job's status messages)."""
        return self.name


class BackgroundReservation:
    """Runs :meth:`BaseExecutor.reserve` in a thread, so that the wait for the
    cluster (connecting, placing, starting actors) overlaps other work of the
    supervisor, such as preparing the job's input.

    Args:
        executor: The job's executor.
        spec: The job.
        cancelled: Polled while waiting, as by ``reserve``.
    """

    def __init__(
        self, executor: BaseExecutor, spec: JobSpec, cancelled: Callable[[], bool]
    ) -> None:
        self._abandoned = threading.Event()
        self._placements: list[InstancePlacement] | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._reserve, args=(executor, spec, cancelled), name="reserve", daemon=True
        )
        self._thread.start()

    def _reserve(
        self, executor: BaseExecutor, spec: JobSpec, cancelled: Callable[[], bool]
    ) -> None:
        try:
            self._placements = executor.reserve(
                spec, lambda: self._abandoned.is_set() or cancelled()
            )
        except BaseException as error:  # handed to the caller of result()
            self._error = error

    def result(self) -> list[InstancePlacement] | None:
        """Wait for ``reserve``; its placements, or ``None`` when cancelled.

        Raises:
            BcdError: What ``reserve`` raised.
        """
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._placements

    def abandon(self) -> None:
        """Give up: stop waiting and return once ``reserve`` has (release what it held
        with :meth:`BaseExecutor.close` after this)."""
        self._abandoned.set()
        self._thread.join()
