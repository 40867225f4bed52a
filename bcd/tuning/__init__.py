"""Hyperparameter tuning jobs over Optuna, on top of the training-job engine.

A tuning job runs many training jobs (trials), each tagged ``bcd:tuning-job``,
with hyperparameters suggested by an Optuna study (TPE for ``Bayesian``,
random, grid, or Hyperband), prunes the poor ones from their per-epoch
metrics, and reports the best. The study lives in an RDB storage beside the
metadata store, so a driver that dies resumes without repeating trials, and
several processes or machines can work on one tuning job.
"""

from __future__ import annotations

from bcd.tuning._config import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    TuningJobConfig,
    parse_request,
)
from bcd.tuning._driver import TuningDriver, drive
from bcd.tuning._plot import plot_tuning_job
from bcd.tuning._service import (
    best_training_job,
    create_tuning_job,
    describe_tuning_job,
    driver_log,
    list_trials,
    list_tuning_jobs,
    load_request_file,
    resume_tuning_job,
    stop_tuning_job,
    validate_request,
)

__all__ = [
    "CategoricalRange",
    "ContinuousRange",
    "IntegerRange",
    "TuningDriver",
    "TuningJobConfig",
    "best_training_job",
    "create_tuning_job",
    "describe_tuning_job",
    "drive",
    "driver_log",
    "list_trials",
    "list_tuning_jobs",
    "load_request_file",
    "parse_request",
    "plot_tuning_job",
    "resume_tuning_job",
    "stop_tuning_job",
    "validate_request",
]
