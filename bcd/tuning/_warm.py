"""Warm start: seed a new study with the finished trials of parent tuning jobs.

Parents' completed trials enter the study as finished Optuna trials (they are
not re-run and do not count against ``MaxNumberOfTrainingJobs``), so the
sampler starts from what they learnt. A parent trial whose values fall
outside the new ranges, or that misses a tuned hyperparameter, is skipped.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bcd.config import Settings
from bcd.tuning import _store
from bcd.tuning._config import TuningJobConfig
from bcd.tuning._space import distributions, params_of

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)


def seed_from_parents(study: optuna.Study, config: TuningJobConfig, settings: Settings) -> int:
    """Add the parents' completed trials to ``study``.

    Returns:
        How many trials were added.
    """
    import optuna

    space = distributions(config.ranges)
    seeded: list[optuna.trial.FrozenTrial] = []
    for parent in config.parents:
        for row in _store.trials(parent, settings):
            if row.status != "Completed" or row.objective_value is None:
                continue
            params = params_of(row.hyperparameters, config.ranges)
            if params is None:
                logger.debug("trial %d of %s is outside the new ranges", row.slot, parent)
                continue
            seeded.append(
                optuna.trial.create_trial(
                    params=params,
                    distributions=space,
                    value=row.objective_value,
                    user_attrs={"bcd:parent": parent, "bcd:training-job": row.training_job_name},
                )
            )
    study.add_trials(seeded)
    return len(seeded)
