"""The supervisor of one training job: ``python -m bcd.jobs.supervisor NAME``.

It runs detached from whoever created the job, and carries the job from
``Starting`` to an end: resolves the input channels, copies in a checkpoint to
start from, starts one process per instance with the script-mode environment,
tees their output to the job log, scrapes metrics, samples instance metrics,
enforces ``MaxRuntimeInSeconds``, honours stop requests (SIGTERM to the
supervisor, or the record set to ``Stopping``), uploads the model, output data
and checkpoints, and records the outcome. Whatever goes wrong, the record ends
in a terminal status with a reason.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bcd._process import keep_caller_priority, process_start_time
from bcd.config import Settings, get_settings
from bcd.db import utcnow
from bcd.errors import BcdError
from bcd.jobs import _store
from bcd.jobs._algorithms import instance_command, teacher_model_uri
from bcd.jobs._channels import materialize_channel
from bcd.jobs._instances import JobLayout, LogTee, instance_env
from bcd.jobs._launcher import JOB_LOG
from bcd.jobs._monitor import InstanceSampler, MetricScraper, MetricWriter
from bcd.jobs._spec import SCRIPT_ALGORITHM, JobSpec
from bcd.jobs.executors import BaseInstance, InstancePlacement, get_executor, stop_instances
from bcd.jobs.executors._base import BackgroundReservation
from bcd.jobs.executors._usage import InstanceUsage
from bcd.storage import BaseArtifactStore, FsspecArtifactStore, artifact_store

logger = logging.getLogger(__name__)

_POLL_S = 0.2
_DB_POLL_S = 2.0
_FAILURE_REASON_CHARS = 2000


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(path.is_file() for path in folder.rglob("*"))


class Supervisor:
    """Runs job ``name`` to its end (see the module docstring).

    Args:
        name: The job, already recorded ``InProgress``.
        settings: Where the metadata store and artifacts are.
    """

    def __init__(self, name: str, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        record = _store.get_job(name, settings)
        self.spec = JobSpec.from_dict(record.spec)
        self.checkpoint_uri = record.checkpoint_uri
        self.layout = JobLayout(Path(record.workdir))
        self.executor = get_executor(self.spec.executor, settings)
        self.instances: list[BaseInstance] = []
        self.stop_event = threading.Event()
        self.stop_kind: str | None = None
        self.grace_s = float(os.environ.get("BCD_JOB_STOP_GRACE_S", settings.job_stop_grace_s))
        self.sample_s = float(
            os.environ.get("BCD_JOB_SAMPLE_INTERVAL_S", settings.job_sample_interval_s)
        )

    # -- stop requests --------------------------------------------------------------

    def request_stop(self, kind: str) -> None:
        """Ask the job to stop: ``"user"`` (stop call) or ``"max_runtime"``."""
        if self.stop_kind is None:
            self.stop_kind = kind
        self.stop_event.set()

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop("user")

    def _stop_requested_in_store(self) -> bool:
        try:
            return _store.get_job(self.name, self.settings).status == "Stopping"
        except BcdError:
            return False

    # -- the run --------------------------------------------------------------------

    def run(self) -> int:
        """Run the job; returns the supervisor's exit code (0 unless it crashed)."""
        signal.signal(signal.SIGTERM, self._on_sigterm)
        signal.signal(signal.SIGINT, self._on_sigterm)
        _store.update_job(
            self.name,
            self.settings,
            supervisor_pid=os.getpid(),
            supervisor_start=process_start_time(),
        )
        try:
            self._run()
        except BaseException as error:
            logger.exception("supervisor of %s crashed", self.name)
            stop_instances(self.instances, grace_s=self.grace_s)
            self._release()
            _store.set_status(
                self.name,
                self.settings,
                status="Failed",
                secondary="Failed",
                message="The training job supervisor crashed",
                failure_reason=f"InternalError: the job supervisor crashed: {error!r}; "
                f"see {self.layout.root / 'supervisor.log'}",
                training_end=utcnow(),
            )
            return 1
        return 0

    def _run(self) -> None:
        if self._stop_requested_in_store():
            self._finish_stopped(started=None)
            return
        _store.set_status(
            self.name,
            self.settings,
            secondary="Downloading",
            message="Downloading input data",
        )
        # The executor reserves the instances (Ray: connect, place, start the
        # actors in their own processes) while the input is prepared here.
        reservation = BackgroundReservation(self.executor, self.spec, self._cancelled)
        try:
            channels = self._prepare_inputs()
        except (BcdError, OSError) as error:
            self._give_up(reservation, f"ClientError: could not prepare the job's input: {error}")
            return
        try:
            command = instance_command(self.spec, self.layout.code)
        except BcdError as error:
            self._give_up(reservation, f"ClientError: the algorithm cannot start: {error}")
            return
        if self.stop_event.is_set() or self._stop_requested_in_store():
            reservation.abandon()
            self._release()
            self._finish_stopped(started=None)
            return
        try:
            placements = reservation.result()
        except BcdError as error:
            self._release()
            self._fail(f"ClientError: the {self.executor.name} executor cannot run it: {error}")
            return
        if placements is None:
            self._release()
            self.request_stop("user")
            self._finish_stopped(started=None)
            return
        started = utcnow()
        self._record_placements(placements)
        _store.set_status(
            self.name,
            self.settings,
            secondary="Training",
            message=f"Training in progress on {self.executor.describe()}: "
            + "; ".join(_where(placement) for placement in placements),
            training_start=started,
        )
        writer = MetricWriter(self.name, self.settings)
        writer.start()
        scraper = MetricScraper(self.spec.metric_definitions)

        def on_primary_line(line: str) -> None:
            for metric, value, epoch in scraper.scrape(line):
                writer.add("algorithm", metric, value, epoch)

        tee = LogTee(self.layout.root / JOB_LOG, on_primary_line, self.spec.instance_count > 1)
        sampler = InstanceSampler(
            self._live_pids,
            self.layout.root,
            lambda metric, value: writer.add("instance", metric, value),
            interval_s=self.sample_s,
            remote=self._remote_usage,
        )
        try:
            self._start_instances(command, channels, placements, tee)
            sampler.start()
            self._watch(started)
        finally:
            if any(instance.returncode is None for instance in self.instances):
                stop_instances(self.instances, grace_s=self.grace_s)
            for instance in self.instances:
                instance.kill_leftovers()
            for instance in self.instances:
                instance.join_output(timeout=10)
            self._release()
            sampler.close()
            writer.close()
            tee.close()
        ended = utcnow()
        _store.update_job(
            self.name,
            self.settings,
            training_end=ended,
            billable_seconds=math.ceil((ended - started).total_seconds())
            * self.spec.instance_count,
        )
        self._upload_and_finish(started, metric_count=writer.count)

    def _live_pids(self) -> list[int]:
        return [
            instance.local_pid
            for instance in self.instances
            if instance.returncode is None and instance.local_pid is not None
        ]

    def _remote_usage(self) -> list[InstanceUsage]:
        samples = [instance.usage for instance in self.instances if instance.returncode is None]
        return [sample for sample in samples if sample is not None]

    def _cancelled(self) -> bool:
        return self.stop_event.is_set() or self._stop_requested_in_store()

    def _give_up(self, reservation: BackgroundReservation, reason: str) -> None:
        reservation.abandon()
        self._release()
        self._fail(reason)

    def _release(self) -> None:
        try:
            self.executor.close()
        except Exception:  # releasing must never hide how the job ended
            logger.exception("the %s executor could not release the job", self.executor.name)

    def _record_placements(self, placements: list[InstancePlacement]) -> None:
        record = _store.get_job(self.name, self.settings)
        spec = dict(record.spec)
        spec["placements"] = [placement.describe(self.executor.name) for placement in placements]
        _store.update_job(self.name, self.settings, spec=spec)

    def _prepare_inputs(self) -> dict[str, Path]:
        layout = self.layout
        for folder in (layout.input_config, layout.checkpoints, layout.output_data_dir(0)):
            folder.mkdir(parents=True, exist_ok=True)
        channels = {
            channel.name: materialize_channel(
                channel.name, channel.uri, layout.input_data / channel.name, self.settings
            )
            for channel in self.spec.channels
        }
        teacher = teacher_model_uri(self.spec, self.settings)
        if teacher is not None:
            channels["teacher"] = materialize_channel(
                "teacher", teacher, layout.input_data / "teacher", self.settings
            )
        if self.spec.algorithm == SCRIPT_ALGORITHM and self.spec.source_dir:
            if layout.code.exists():
                shutil.rmtree(layout.code)
            # A copy, so editing the script while the job runs changes nothing.
            shutil.copytree(self.spec.source_dir, layout.code)
        sources = [self.spec.checkpoint_source, self.checkpoint_uri]
        for source in sources:
            if source and self._copy_checkpoints(source):
                break
        return channels

    def _copy_checkpoints(self, uri: str) -> bool:
        store = FsspecArtifactStore(uri, self.settings.storage_options())
        if not store.list(""):
            return False
        store.get_dir("", self.layout.checkpoints)
        _store.set_status(
            self.name,
            self.settings,
            secondary="Downloading",
            message=f"Copied checkpoints from {uri} into the job",
        )
        return True

    def _start_instances(
        self,
        command: list[str],
        channels: dict[str, Path],
        placements: list[InstancePlacement],
        tee: LogTee,
    ) -> None:
        cwd = self.layout.code if self.spec.algorithm == SCRIPT_ALGORITHM else self.layout.root
        base_env = dict(os.environ)
        for placement in placements:
            env = instance_env(self.spec, self.layout, channels, placement, placements[0], base_env)
            Path(env["SM_MODEL_DIR"]).mkdir(parents=True, exist_ok=True)
            Path(env["SM_OUTPUT_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
            self.instances.append(self.executor.start(placement, command, cwd, env, tee.emit))

    def _watch(self, started: object) -> None:
        deadline = time.monotonic() + self.spec.max_runtime_s
        next_db_poll = time.monotonic() + _DB_POLL_S
        while True:
            codes = [instance.returncode for instance in self.instances]
            if all(code is not None for code in codes):
                return
            # One failed instance dooms a data-parallel job: stop the others.
            if any(code not in (None, 0) for code in codes):
                stop_instances(self.instances, grace_s=self.grace_s)
                return
            now = time.monotonic()
            if now >= deadline:
                self.request_stop("max_runtime")
            elif now >= next_db_poll:
                next_db_poll = now + _DB_POLL_S
                if self._stop_requested_in_store():
                    self.request_stop("user")
            if self.stop_event.is_set():
                self._announce_stop()
                stop_instances(self.instances, grace_s=self.grace_s)
                return
            self.stop_event.wait(_POLL_S)

    def _announce_stop(self) -> None:
        if self.stop_kind == "max_runtime":
            message = (
                f"MaxRuntimeInSeconds={self.spec.max_runtime_s} exceeded; stopping the job "
                f"(SIGTERM, then SIGKILL after {self.grace_s:g} s)"
            )
        else:
            message = f"Stop requested (SIGTERM, then SIGKILL after {self.grace_s:g} s)"
        # A stop call has already recorded Stopping; a max-runtime stop records it here.
        _store.set_status(
            self.name,
            self.settings,
            status="Stopping",
            secondary="Stopping",
            message=message,
            allowed_from={"InProgress"},
        )

    # -- the end --------------------------------------------------------------------

    def _upload_and_finish(self, started: object, metric_count: int) -> None:
        _store.set_status(
            self.name,
            self.settings,
            secondary="Uploading",
            message="Uploading the model, output data and checkpoints",
        )
        try:
            model_url = self._upload()
        except (BcdError, OSError) as error:
            self._fail(f"UploadError: the job's artifacts could not be stored: {error}")
            return
        if self.stop_kind is not None:
            self._finish_stopped(started=started, model_url=model_url)
            return
        failure = self._failure_reason(metric_count, model_url)
        if failure:
            self._fail(failure, model_artifact=model_url)
            return
        _store.set_status(
            self.name,
            self.settings,
            status="Completed",
            secondary="Completed",
            message="Training job completed",
            model_artifact=model_url,
            final_metrics=_store.final_metrics(self.name, self.settings),
        )

    def _upload(self) -> str | None:
        layout, spec = self.layout, self.spec
        store: BaseArtifactStore
        if spec.output_path:
            store = FsspecArtifactStore(spec.output_path, self.settings.storage_options())
            prefix = spec.name
        else:
            store, prefix = artifact_store(self.settings), f"training-jobs/{spec.name}"
        model_url = None
        if _has_files(layout.model_dir(0)):
            model_url = store.put_dir(layout.model_dir(0), f"{prefix}/output/model")
        if _has_files(layout.output_data_dir(0)):
            store.put_dir(layout.output_data_dir(0), f"{prefix}/output/data")
        if _has_files(layout.checkpoints) and self.checkpoint_uri:
            FsspecArtifactStore(self.checkpoint_uri, self.settings.storage_options()).put_dir(
                layout.checkpoints, ""
            )
        return model_url

    def _failure_reason(self, metric_count: int, model_url: str | None) -> str | None:
        # SageMaker's convention: a script may explain its failure in output/failure.
        written = self.layout.output / "failure"
        text = written.read_text(errors="replace").strip() if written.is_file() else ""
        if text and any(instance.returncode for instance in self.instances):
            return f"AlgorithmError: {text}"[:_FAILURE_REASON_CHARS]
        # The instance that failed by itself explains more than those stopped after it.
        stopped_by_us = (-signal.SIGTERM, -signal.SIGKILL)
        ranked = sorted(
            self.instances,
            key=lambda item: (item.lost is None, item.returncode in stopped_by_us),
        )
        for instance in ranked:
            code = instance.returncode
            if code in (0, None):
                continue
            if instance.lost is not None:
                return f"AlgorithmError: instance {instance.host} was lost: {instance.lost}"[
                    :_FAILURE_REASON_CHARS
                ]
            how = (
                f"exited with code {code}"
                if code > 0
                else f"was killed by {_signal_name(code)}"
                + (" (out of memory?)" if code == -signal.SIGKILL else "")
            )
            tail = "\n".join(instance.stderr_tail).strip()
            detail = (
                f"; last lines of its stderr:\n{tail}"
                if tail
                else f"; it wrote nothing to stderr (see `bcd jobs logs {self.name}`)"
            )
            return f"AlgorithmError: instance {instance.host} {how}{detail}"[
                -_FAILURE_REASON_CHARS:
            ]
        if self.spec.metric_definitions and metric_count == 0:
            names = ", ".join(item["Name"] for item in self.spec.metric_definitions)
            return (
                f"NoMetrics: the job finished but printed no line matching its metric "
                f"definitions ({names}); make the script print them (e.g. "
                f"'{self.spec.metric_definitions[0]['Name']}=0.93') or fix the regexes"
            )
        if self.spec.algorithm != SCRIPT_ALGORITHM and model_url is None:
            return "AlgorithmError: the algorithm finished without writing a model to SM_MODEL_DIR"
        return None

    def _fail(self, reason: str, **fields: Any) -> None:
        logger.warning("job %s failed: %s", self.name, reason.splitlines()[0])
        _store.set_status(
            self.name,
            self.settings,
            status="Failed",
            secondary="Failed",
            message="Training job failed",
            failure_reason=reason,
            final_metrics=_store.final_metrics(self.name, self.settings),
            **fields,
        )

    def _finish_stopped(self, started: object, model_url: str | None = None) -> None:
        if self.stop_kind == "max_runtime":
            secondary = "MaxRuntimeExceeded"
            reason = (
                f"MaxRuntimeExceeded: the job ran longer than MaxRuntimeInSeconds="
                f"{self.spec.max_runtime_s} and was stopped"
            )
        else:
            secondary, reason = "Stopped", "Stopped on request"
        fields: dict[str, Any] = {
            "stop_reason": reason,
            "final_metrics": _store.final_metrics(self.name, self.settings),
        }
        if model_url:
            fields["model_artifact"] = model_url
        if started is None:
            fields["training_end"] = utcnow()
        _store.set_status(
            self.name,
            self.settings,
            status="Stopped",
            secondary=secondary,
            message=f"Training job stopped: {reason}",
            allowed_from={"InProgress", "Stopping"},
            **fields,
        )


def _where(placement: InstancePlacement) -> str:
    gpus = f", {placement.num_gpus} GPU" if placement.num_gpus else ""
    return f"{placement.host} on {placement.node} ({placement.num_cpus} CPU{gpus})"


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m bcd.jobs.supervisor NAME``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m bcd.jobs.supervisor JOB_NAME\n")
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    niceness = keep_caller_priority()
    if niceness:
        logger.info("job processes run at nice %d (their session's scheduling group)", niceness)
    return Supervisor(args[0], get_settings()).run()


if __name__ == "__main__":
    sys.exit(main())
