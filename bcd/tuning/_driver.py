"""The tuning driver: asks Optuna for trials, runs each as a training job, tells results.

One loop, polling: claim a slot (at most ``MaxParallelTrainingJobs`` running,
``MaxNumberOfTrainingJobs`` in all, across every worker of the job), ask the
study for hyperparameters, create the training job; feed each running job's
per-epoch objective to Optuna and stop it when the pruner says so; when a job
ends, tell the study. Everything the loop knows is in the metadata store and
the study, so a driver that dies can be resumed by another without repeating
finished trials: running trials are adopted, half-started ones are given back.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bcd.config import Settings, get_settings
from bcd.db import utcnow
from bcd.errors import BcdError
from bcd.tuning import _store
from bcd.tuning._backend import JobState, MetricValue, TrainingBackend
from bcd.tuning._config import TuningJobConfig, parse_request
from bcd.tuning._process import this_worker, worker_alive
from bcd.tuning._space import suggest
from bcd.tuning._study import load_study

if TYPE_CHECKING:
    import optuna

    from bcd.tuning._tables import TuningJobRecord, TuningTrialRecord

logger = logging.getLogger(__name__)

# A tuning job whose first trials all fail is failed rather than run to the end.
FAIL_FAST_TRIALS = 3
HEARTBEAT_INTERVAL_S = 2.0


@dataclass
class _Running:
    slot: int
    job_name: str
    trial: optuna.trial.Trial
    reported: int = 0
    steps: set[int] = field(default_factory=set)
    pruning: bool = False
    stop_sent: bool = False


class TuningDriver:
    """Runs (or helps run) one tuning job to its end.

    Args:
        name: The tuning job.
        settings: Where the metadata store is; default :func:`get_settings`.
        primary: True for the job's driver (it records itself, adopts orphaned
            trials and waits for other workers' trials); False for an extra
            worker, which leaves when no slot is left for it.
        poll_interval_s: Seconds between polls of the running jobs.
        backend: The training-job engine (a test may pass another).
    """

    def __init__(
        self,
        name: str,
        settings: Settings | None = None,
        *,
        primary: bool = True,
        poll_interval_s: float = 0.25,
        backend: TrainingBackend | None = None,
    ) -> None:
        self.name = name
        self.settings = settings or get_settings()
        self.primary = primary
        self.poll_interval_s = poll_interval_s
        self.backend = backend or TrainingBackend(self.settings)
        self.worker = this_worker()
        self._running: dict[int, _Running] = {}
        self._last_beat = 0.0
        record = _store.get_job(name, self.settings)
        self.config: TuningJobConfig = parse_request(record.request)
        offset = len(_store.trials(name, self.settings))
        if not primary:
            offset += os.getpid()  # extra workers must not replay the driver's suggestions
        self.study = load_study(self.config, self.settings, seed_offset=offset)
        self._prunes = self.config.strategy == "Hyperband" or self.config.early_stopping == "Auto"

    def _tell(self, *args: Any, **kwargs: Any) -> None:
        """Report a trial's end to the study.

        Optuna's GridSampler calls ``study.stop()`` once every grid point has
        been tried, which raises outside ``study.optimize``; the trial's result
        is stored before that, and this driver bounds the trial count itself.
        """
        try:
            self.study.tell(*args, **kwargs)
        except RuntimeError as error:
            if "Study.stop" not in str(error):
                raise
            logger.info("tuning job %s: every grid point has been tried", self.name)

    def run(self) -> str:
        """Run until the tuning job ends (or, for an extra worker, until no slot is left).

        Returns:
            The tuning job's status when this worker leaves.
        """
        if self.primary:
            _store.update_job(
                self.name,
                self.settings,
                driver=self.worker,
                driver_heartbeat=utcnow(),
            )
        logger.info("tuning job %s: worker %s starts", self.name, self.worker)
        self._recover()
        while True:
            record = _store.get_job(self.name, self.settings)
            ending = record.stop_requested or record.status in _store.TERMINAL
            if not ending and self._over_time(record):
                ending = True
            if ending:
                self._stop_running()
            for running in list(self._running.values()):
                self._poll(running)
            if not ending:
                while self._launch():
                    pass
            self._beat()
            if not self._running and self.primary:
                self._recover()
            if not self._running:
                done = self._finish_if_done()
                if done or ending or (not self.primary and not self._slots_left()):
                    break
            time.sleep(self.poll_interval_s)
        status = _store.get_job(self.name, self.settings).status
        logger.info("tuning job %s: worker %s leaves, status %s", self.name, self.worker, status)
        return status

    def _over_time(self, record: TuningJobRecord) -> bool:
        limit = self.config.max_runtime_s
        created = _store.aware(record.created_at)
        if limit is None or created is None or (utcnow() - created).total_seconds() < limit:
            return False
        _store.set_status(
            self.name,
            "Stopping",
            self.settings,
            allowed_from=frozenset({"InProgress"}),
            stop_requested=True,
            failure_reason=f"ResourceLimits.MaxRuntimeInSeconds ({limit:.0f} s) reached",
        )
        return True

    def _slots_left(self) -> bool:
        record = _store.get_job(self.name, self.settings)
        return record.launched < record.max_jobs and record.status == "InProgress"

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_INTERVAL_S:
            _store.beat(self.name, self.worker, self.settings, driver=self.primary)
            self._last_beat = now

    def _launch(self) -> bool:
        slot = _store.claim_slot(self.name, self.worker, self.settings)
        if slot is None:
            return False
        import optuna

        trial = self.study.ask()
        hyperparameters = suggest(trial, self.config.ranges)
        job_name = f"{self.name}-{slot:03d}-{secrets.token_hex(4)}"
        _store.update_trial(
            self.name,
            slot,
            self.settings,
            optuna_number=trial.number,
            optuna_trial_id=trial._trial_id,  # Optuna's storage key, to rebuild the trial on resume
            hyperparameters=hyperparameters,
            training_job_name=job_name,
        )
        try:
            self.backend.create(job_name, self.config, hyperparameters)
        except BcdError as error:
            logger.warning("tuning job %s: trial %d could not start: %s", self.name, slot, error)
            self._tell(trial.number, state=optuna.trial.TrialState.FAIL)
            _store.finish_trial(
                self.name,
                slot,
                self.settings,
                status="Failed",
                training_job_name=None,
                objective_status="Failed",
                failure_reason=f"the training job could not start: {error.message}",
            )
            self._fail_fast()
            return True
        _store.update_trial(
            self.name, slot, self.settings, status="InProgress", started_at=utcnow()
        )
        self._running[slot] = _Running(slot=slot, job_name=job_name, trial=trial)
        logger.info("tuning job %s: trial %d started as %s", self.name, slot, job_name)
        return True

    def _poll(self, running: _Running) -> None:
        try:
            state = self.backend.state(running.job_name)
        except BcdError as error:
            state = JobState(status="Failed", failure_reason=str(error), final_metrics={})
        series: list[MetricValue] = []
        if self._prunes or state.terminal:
            series = self.backend.series(running.job_name, self.config.objective_metric)
        new_points = series[running.reported :]
        for point in new_points:
            # Optuna keeps one value per step; a repeated epoch (a resumed job) keeps the first.
            if point.step not in running.steps and math.isfinite(point.value):
                running.trial.report(point.value, point.step)
                running.steps.add(point.step)
        if new_points:
            running.reported = len(series)
            _store.update_trial(
                self.name, running.slot, self.settings, intermediate_steps=len(series)
            )
        if (
            new_points
            and self._prunes
            and not running.stop_sent
            and not state.terminal
            and running.trial.should_prune()
        ):
            logger.info("tuning job %s: pruning trial %d", self.name, running.slot)
            running.pruning = running.stop_sent = True
            _store.update_trial(self.name, running.slot, self.settings, status="Stopping")
            self.backend.stop(running.job_name)
        if state.terminal:
            self._end(running, state, series)

    def _end(self, running: _Running, state: JobState, series: list[MetricValue]) -> None:
        import optuna

        del self._running[running.slot]
        number = running.trial.number
        metric = self.config.objective_metric
        last = series[-1].value if series else None
        if state.status == "Completed":
            value = state.final_metrics.get(metric, last)
            if value is None or not math.isfinite(value):
                emitted = ", ".join(sorted(state.final_metrics)) or "no metrics at all"
                reason = (
                    f"the objective metric {metric!r} was not emitted by training job "
                    f"{running.job_name!r} (it emitted: {emitted}); check "
                    "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.MetricName "
                    "and the MetricDefinitions regexes"
                )
                self._tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
                _store.finish_trial(
                    self.name,
                    running.slot,
                    self.settings,
                    status="Completed",
                    objective_status="Failed",
                    failure_reason=reason,
                )
                self._fail(reason)
                return
            self._tell(number, value, skip_if_finished=True)
            _store.finish_trial(
                self.name,
                running.slot,
                self.settings,
                status="Completed",
                objective_value=value,
                objective_status="Succeeded",
            )
        elif state.status == "Stopped" and running.pruning:
            self._tell(number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            _store.finish_trial(
                self.name,
                running.slot,
                self.settings,
                status="Stopped",
                pruned=True,
                objective_value=last,
                objective_status="Succeeded" if last is not None else "Failed",
            )
        else:
            self._tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            _store.finish_trial(
                self.name,
                running.slot,
                self.settings,
                status=state.status,
                # A failed or stopped trial has no objective, whatever it printed before.
                objective_value=None,
                objective_status="Failed",
                failure_reason=state.failure_reason,
            )
            if state.status == "Failed":
                self._fail_fast()
        logger.info("tuning job %s: trial %d ended %s", self.name, running.slot, state.status)

    def _fail_fast(self) -> None:
        ended = [row for row in _store.trials(self.name, self.settings) if row.ended_at is not None]
        if len(ended) < FAIL_FAST_TRIALS or any(row.status != "Failed" for row in ended):
            return
        reason = ended[-1].failure_reason or "no reason recorded"
        self._fail(f"the first {len(ended)} trials all failed; the last one: {reason}")

    def _fail(self, reason: str) -> None:
        logger.warning("tuning job %s fails: %s", self.name, reason)
        _store.set_status(self.name, "Failed", self.settings, failure_reason=reason)
        self._stop_running()

    def _stop_running(self) -> None:
        for running in self._running.values():
            if not running.stop_sent:
                running.stop_sent = True
                self.backend.stop(running.job_name)

    def _finish_if_done(self) -> bool:
        record = _store.get_job(self.name, self.settings)
        if record.status in _store.TERMINAL:
            return True
        rows = _store.trials(self.name, self.settings)
        if any(row.status in _store.TRIAL_ACTIVE for row in rows):
            return False
        if record.stop_requested:
            return _store.set_status(self.name, "Stopped", self.settings)
        if record.launched < record.max_jobs:
            return False
        if any(row.objective_status == "Succeeded" and not row.pruned for row in rows):
            return _store.set_status(self.name, "Completed", self.settings)
        failed = [row for row in rows if row.status == "Failed"]
        reason = f"no trial completed with a value of {self.config.objective_metric!r}"
        if failed:
            reason += f"; {len(failed)} failed, the last one: {failed[-1].failure_reason}"
        return _store.set_status(self.name, "Failed", self.settings, failure_reason=reason)

    def _recover(self) -> None:
        """Adopt the running trials of dead workers; give back their half-started slots."""
        import optuna

        for row in _store.trials(self.name, self.settings):
            if row.status not in _store.TRIAL_ACTIVE or row.worker == self.worker:
                continue
            if worker_alive(row.worker, _store.aware(row.heartbeat)):
                continue
            if not _store.adopt_trial(self.name, row.slot, row.worker, self.worker, self.settings):
                continue
            started = row.training_job_name is not None and self.backend.exists(
                row.training_job_name
            )
            if row.optuna_trial_id is None or not started:
                if row.optuna_number is not None:
                    self._tell(
                        row.optuna_number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True
                    )
                _store.release_slot(self.name, row.slot, self.settings)
                logger.info("tuning job %s: gave back half-started trial %d", self.name, row.slot)
                continue
            self._adopt(row)

    def _adopt(self, row: TuningTrialRecord) -> None:
        import optuna

        assert row.training_job_name is not None and row.optuna_trial_id is not None
        trial = optuna.trial.Trial(self.study, row.optuna_trial_id)
        frozen = self.study.trials[trial.number]
        _store.update_trial(
            self.name,
            row.slot,
            self.settings,
            status="Stopping" if row.status == "Stopping" else "InProgress",
        )
        self._running[row.slot] = _Running(
            slot=row.slot,
            job_name=row.training_job_name,
            trial=trial,
            reported=row.intermediate_steps,
            steps=set(frozen.intermediate_values),
            pruning=row.status == "Stopping",
            stop_sent=row.status == "Stopping",
        )
        logger.info(
            "tuning job %s: adopted trial %d (%s)", self.name, row.slot, row.training_job_name
        )


def drive(name: str, settings: Settings | None = None, *, primary: bool = True) -> str:
    """Run tuning job ``name`` in this process until it ends.

    Args:
        name: The tuning job.
        settings: Where the metadata store is.
        primary: False to join as an extra worker.

    Returns:
        The tuning job's status when this worker leaves.
    """
    return TuningDriver(name, settings, primary=primary).run()
