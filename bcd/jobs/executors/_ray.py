"""The ``ray`` executor: each instance process runs inside a Ray actor, anywhere in the cluster.

The supervisor connects to the cluster (``BCD_RAY_ADDRESS``: ``auto``,
``ray://host:port``, ``host:port``; unset: a local head that bcd starts once
per ``BCD_HOME``, see :func:`local_head_address`), reserves one placement-group
bundle per instance (``SPREAD``: different nodes when the cluster has them)
with the CPUs and GPUs of ``ResourceConfig.InstanceType``
(:data:`~bcd.jobs.executors.INSTANCE_TYPES`), and starts one actor per
bundle. Each actor (:class:`~._ray_actor.ProcessActor`) runs the instance
command as its child process, in a session of its own, samples its CPU and
memory on its node, and hands its output lines and samples back to the
supervisor, which writes the log and scrapes metrics exactly as for local
instances. The primary's actor names ``MASTER_ADDR`` (its node's address) and
a free ``MASTER_PORT``.

The actors are owned by the supervisor: if it dies, Ray ends them and frees the
reservation, and each instance process dies with its actor. An actor that is
lost fails its instance (:attr:`BaseInstance.lost`). Every node must see the
job folder and the metadata store at the same paths (one machine; or a shared
``BCD_HOME`` with PostgreSQL, see docs/cluster.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bcd.errors import DependencyMissingError, InvalidInputError, NotReadyError
from bcd.jobs.executors._base import (
    INSTANCE_TYPES,
    LOCAL_INSTANCE_TYPE,
    BaseExecutor,
    BaseInstance,
    InstancePlacement,
    LineSink,
)
from bcd.jobs.executors._ray_actor import ProcessActor
from bcd.jobs.executors._usage import InstanceUsage

if TYPE_CHECKING:
    from bcd.config import Settings
    from bcd.jobs._spec import JobSpec

logger = logging.getLogger(__name__)

NAMESPACE = "bcd"
_READ_WAIT_S = 0.5
_CALL_TIMEOUT_S = 60.0
_HEAD_START_TIMEOUT_S = 120


def import_ray() -> Any:
    """The ``ray`` module. Raises DependencyMissingError when bcd[ray] is not installed."""
    try:
        import ray
    except ImportError:
        raise DependencyMissingError(
            "BCD_EXECUTOR=ray needs Ray: pip install 'bcd[ray]' (or set BCD_EXECUTOR=local)"
        ) from None
    return ray


def _reachable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except (OSError, ValueError):
        return False


def local_head_address(settings: Settings) -> str:
    """The address of bcd's own Ray head for ``settings.home``, started when none runs.

    The head (``ray start --head``) outlives the command that started it, so
    jobs keep running after ``bcd train`` returns; ``ray stop`` ends it. Its
    address is kept in ``$BCD_HOME/ray/address``; a lock keeps two supervisors
    from starting two heads.

    Raises:
        NotReadyError: The head could not be started.
    """
    folder = settings.home / "ray"
    folder.mkdir(parents=True, exist_ok=True)
    address_file = folder / "address"
    with open(folder / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if address_file.is_file():
            address = address_file.read_text().strip()
            if _reachable(address):
                return address
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        ray_cli = Path(sys.executable).with_name("ray")
        command = [
            str(ray_cli) if ray_cli.exists() else "ray",
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ]
        logger.info("starting a local Ray head on port %d", port)
        try:
            subprocess.run(
                command,
                check=True,
                capture_output=True,
                timeout=_HEAD_START_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise NotReadyError(
                f"could not start a local Ray head ({error}); start one with "
                "`ray start --head` and set BCD_RAY_ADDRESS=auto"
            ) from None
        address = f"127.0.0.1:{port}"
        address_file.write_text(address)
        return address


def running_cluster() -> str | None:
    """The cluster ``ray.init()`` would join on its own: ``RAY_ADDRESS``, else the
    latest ``ray start`` head of this machine; ``None`` when neither answers."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        address = canonicalize_bootstrap_address(None)  # type: ignore[arg-type]
    except Exception:  # no cluster recorded (or an internal change in Ray): none found
        return None
    if address and (address.startswith("ray://") or _reachable(address)):
        return str(address)
    return None


def resolve_address(settings: Settings) -> str:
    """The cluster address to use: ``BCD_RAY_ADDRESS``, else a running local cluster
    (``RAY_ADDRESS`` or ``ray start --head`` on this machine), else bcd's own head."""
    if settings.ray_address:
        return settings.ray_address
    address = running_cluster() or local_head_address(settings)
    _use_local_token()
    return address


def _use_local_token() -> None:
    """Authenticate with this machine's Ray token (``~/.ray/auth_token``) when there is one.

    ``ray start`` turns token authentication on when that token exists, and
    ``ray.init`` uses it for clusters it finds by itself, but not for an
    address it is given; bcd gives the address of the local cluster it found
    or started, so it turns the token on the same way.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def connect(settings: Settings) -> str:
    """Connect this process to the executor's Ray cluster (once); the address used.

    Raises:
        DependencyMissingError: Ray is not installed.
        NotReadyError: The cluster cannot be reached.
    """
    ray = import_ray()
    address = resolve_address(settings)
    if ray.is_initialized():
        return address
    # ray.init replaces SIGTERM/SIGINT handlers with ones that exit; a supervisor
    # must keep its own (SIGTERM means "stop the job gracefully").
    in_main_thread = threading.current_thread() is threading.main_thread()
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise NotReadyError(
            f"the Ray cluster at {address!r} (BCD_RAY_ADDRESS) cannot be reached: {error}; "
            "start it with `ray start --head` or fix the address"
        ) from None
    finally:
        if in_main_thread:
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
    return address


class RayInstance(BaseInstance):
    """An instance process inside a Ray actor (see :class:`BaseInstance`).

    Its resource use is measured by its actor, on its node (:attr:`usage`).
    """

    def __init__(self, placement: InstancePlacement, actor: Any, pid: int, on_line: LineSink):
        super().__init__(placement)
        self._actor = actor
        self._pid = pid
        self._code: int | None = None
        self._usage: InstanceUsage | None = None
        self._reader = threading.Thread(
            target=self._relay, args=(on_line,), name=f"{self.host}-ray-log", daemon=True
        )
        self._reader.start()

    def _relay(self, on_line: LineSink) -> None:
        import ray

        while True:
            try:
                lines, code, usage = ray.get(self._actor.read.remote(_READ_WAIT_S), timeout=120)
            except Exception as error:  # the actor or its node is gone
                self.lost = (
                    f"its Ray actor on node {self.placement.node} ({self.placement.address}) "
                    f"died: {_first_line(error)}"
                )
                on_line(self, f"the Ray actor of {self.host} was lost: {self.lost}", True)
                self._code = -signal.SIGKILL
                return
            if usage is not None:
                self._usage = InstanceUsage.from_dict(usage)
            for is_stderr, line in lines:
                on_line(self, line, is_stderr)
            if code is not None:
                self._code = code
                return

    @property
    def returncode(self) -> int | None:
        return self._code

    @property
    def usage(self) -> InstanceUsage | None:
        return self._usage if self._code is None else None

    def _call(self, method: str, *args: Any) -> None:
        import ray

        with contextlib.suppress(Exception):  # an ended actor has nothing left to signal
            ray.get(getattr(self._actor, method).remote(*args), timeout=_CALL_TIMEOUT_S)

    def signal(self, signum: int) -> None:
        if self._code is None:
            self._call("signal", signum)

    def kill_leftovers(self) -> None:
        if self.lost is None:
            self._call("kill_leftovers")

    def join_output(self, timeout: float) -> None:
        self._reader.join(timeout=timeout)


def _first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (Ray's actor errors run to many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def bundle_for(instance_type: str, cluster_gpus: float) -> dict[str, float]:
    """The Ray resources one instance of ``instance_type`` reserves.

    ``local`` reserves one CPU (and one GPU when the cluster has any) and, as on
    the local executor, uses the node's cores shared with other jobs.

    Raises:
        InvalidInputError: An instance type missing from the table.
    """
    if instance_type == LOCAL_INSTANCE_TYPE:
        return {"CPU": 1.0, **({"GPU": 1.0} if cluster_gpus >= 1 else {})}
    known = INSTANCE_TYPES.get(instance_type)
    if known is None:
        raise InvalidInputError(
            f"unknown ResourceConfig.InstanceType {instance_type!r} for the ray executor; "
            f"valid: {', '.join([LOCAL_INSTANCE_TYPE, *sorted(INSTANCE_TYPES)])}"
        )
    return {"CPU": float(known.cpus), **({"GPU": float(known.gpus)} if known.gpus else {})}


class RayExecutor(BaseExecutor):
    """Runs each instance in a Ray actor with the instance type's CPUs and GPUs.

    Args:
        settings: ``ray_address`` says which cluster; ``home`` holds the local head.
    """

    name = "ray"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = ""
        self._group: Any = None
        self._actors: list[Any] = []

    def check(self, spec: JobSpec) -> None:
        import_ray()
        bundle_for(spec.instance_type, 0.0)

    def reserve(
        self, spec: JobSpec, cancelled: Callable[[], bool]
    ) -> list[InstancePlacement] | None:
        ray = import_ray()
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        began = time.monotonic()
        self.address = connect(self.settings)
        connected = time.monotonic()
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        bundle = bundle_for(spec.instance_type, max((n.get("GPU", 0) for n in nodes), default=0))
        if not any(all(n.get(k, 0) >= v for k, v in bundle.items()) for n in nodes):
            largest: dict[str, float] = max(nodes, key=lambda n: n.get("CPU", 0), default={})
            raise InvalidInputError(
                f"no node of the Ray cluster at {self.address} has {_resources(bundle)} for "
                f"one instance of {spec.instance_type} (largest node: {_resources(largest)}); "
                "choose a smaller InstanceType or add a node"
            )
        # Names show the job in `ray list actors` / `ray list placement-groups`.
        prefix = f"bcd-job:{spec.name}:{os.getpid()}"
        self._group = placement_group(
            [bundle] * spec.instance_count, strategy="SPREAD", name=prefix
        )
        ready = self._group.ready()
        while not ray.wait([ready], timeout=1.0)[0]:
            if cancelled():
                return None
        reserved = time.monotonic()
        # Sent by value: the actor's worker then imports only the standard
        # library and psutil, not bcd.jobs and its dependencies (faster starts).
        for module in (ProcessActor.__module__, InstanceUsage.__module__):
            ray.cloudpickle.register_pickle_by_value(sys.modules[module])
        actor_class = ray.remote(ProcessActor)
        for rank in range(spec.instance_count):
            strategy = PlacementGroupSchedulingStrategy(
                placement_group=self._group, placement_group_bundle_index=rank
            )
            self._actors.append(
                actor_class.options(
                    name=f"{prefix}:algo-{rank + 1}",
                    num_cpus=bundle["CPU"],
                    num_gpus=bundle.get("GPU", 0),
                    scheduling_strategy=strategy,
                    max_concurrency=4,
                ).remote()
            )
        nodes_info = ray.get([actor.node.remote() for actor in self._actors], timeout=300)
        logger.info(
            "reserved %d instance(s) on Ray in %.2f s: connect %.2f s, placement group %.2f s, "
            "actors %.2f s",
            spec.instance_count,
            time.monotonic() - began,
            connected - began,
            reserved - connected,
            time.monotonic() - reserved,
        )
        return [
            _placement(rank, info, spec, bundle, nodes_info[0]["free_port"])
            for rank, info in enumerate(nodes_info)
        ]

    def start(
        self,
        placement: InstancePlacement,
        command: list[str],
        cwd: Path,
        env: dict[str, str],
        on_line: LineSink,
    ) -> BaseInstance:
        ray = import_ray()
        actor = self._actors[placement.rank]
        call = actor.start.remote(command, str(cwd), env, self.settings.job_sample_interval_s)
        pid = ray.get(call, timeout=_CALL_TIMEOUT_S)
        return RayInstance(placement, actor, pid, on_line)

    def close(self) -> None:
        ray = import_ray()
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.get(actor.kill_leftovers.remote(), timeout=10)
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._actors = []
        if self._group is not None:
            from ray.util.placement_group import remove_placement_group

            with contextlib.suppress(Exception):
                remove_placement_group(self._group)
            self._group = None

    def describe(self) -> str:
        return f"ray ({self.address or self.settings.ray_address or 'local head'})"


def _resources(resources: dict[str, float]) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    return f"{cpus:g} CPU" + (f" + {gpus:g} GPU" if gpus else "")


def _placement(
    rank: int, info: dict[str, Any], spec: JobSpec, bundle: dict[str, float], port: int
) -> InstancePlacement:
    if spec.instance_type == LOCAL_INSTANCE_TYPE:
        # As on the local executor: the node's cores, shared by the job's instances.
        cpus = max(1, int(info["cpu_count"]) // spec.instance_count)
    else:
        cpus = int(bundle["CPU"])
    env = {"CUDA_VISIBLE_DEVICES": ",".join(info["gpu_ids"])} if info["gpu_ids"] else {}
    return InstancePlacement(
        rank=rank,
        host=f"algo-{rank + 1}",
        num_cpus=cpus,
        num_gpus=len(info["gpu_ids"]),
        node=info["hostname"],
        address=info["address"],
        master_port=port if rank == 0 else 0,
        env=env,
    )
