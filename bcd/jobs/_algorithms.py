"""From a job spec to the command each instance runs.

Algorithms come from :func:`bcd.algorithms.get_algorithm`, which validates
hyperparameters and knows its command and metric definitions. The job keeps
the hyperparameters as the user gave them (strings, like SageMaker shows
them); the algorithm fills in defaults when it builds the command. Script mode
(``script``) runs the user's entry point from the job's copy of the source
folder, with hyperparameters as ``--name value`` arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bcd.config import Settings
from bcd.errors import InvalidInputError, NotFoundError
from bcd.jobs._spec import SCRIPT_ALGORITHM, JobSpec

BUILTIN_CHANNELS = ("train", "validation")


@dataclass(frozen=True)
class Prepared:
    """What the engine needs from an algorithm for one job.

    Attributes:
        metric_definitions: The algorithm's own definitions, then the user's
            (a user definition replaces a built-in one of the same name).
        required_channels: Channels the algorithm cannot run without.
    """

    metric_definitions: list[dict[str, str]]
    required_channels: tuple[str, ...]


def hyperparameter_arguments(hyperparameters: dict[str, str]) -> list[str]:
    """``{"epochs": "3"}`` → ``["--epochs", "3"]`` (SageMaker's script-mode form)."""
    arguments: list[str] = []
    for key, value in hyperparameters.items():
        arguments += [f"--{key}", value]
    return arguments


def sm_hps(hyperparameters: dict[str, str]) -> str:
    """``SM_HPS``: the hyperparameters as JSON, values decoded from JSON where they parse."""
    decoded: dict[str, Any] = {}
    for key, value in hyperparameters.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return json.dumps(decoded)


def _merge_definitions(
    own: list[dict[str, str]], user: list[dict[str, str]]
) -> list[dict[str, str]]:
    merged = {definition["Name"]: definition for definition in own}
    merged.update({definition["Name"]: definition for definition in user})
    return list(merged.values())


def prepare(spec: JobSpec) -> Prepared:
    """Validate the spec's algorithm, hyperparameters and (script mode) entry point.

    Raises:
        InvalidInputError: Unknown algorithm (listing the valid ones), a
            hyperparameter the algorithm refuses (listing the valid ones), a
            bad entry point.
    """
    from bcd.algorithms import get_algorithm

    algorithm = get_algorithm(spec.algorithm)
    validated = algorithm.validate_hyperparameters(dict(spec.hyperparameters))
    if spec.algorithm == SCRIPT_ALGORITHM:
        algorithm.command(validated, entry_point=spec.entry_point, source_dir=spec.source_dir)
        required: tuple[str, ...] = ()
    else:
        algorithm.command(validated)
        required = BUILTIN_CHANNELS
    own = [dict(item) for item in algorithm.metric_definitions]
    return Prepared(
        metric_definitions=_merge_definitions(own, spec.metric_definitions),
        required_channels=required,
    )


def instance_command(spec: JobSpec, code_dir: Path) -> list[str]:
    """The argv every instance of the job runs.

    Args:
        spec: The job (validated when it was created).
        code_dir: Script mode: the job's copy of the source folder.
    """
    from bcd.algorithms import get_algorithm

    algorithm = get_algorithm(spec.algorithm)
    validated = algorithm.validate_hyperparameters(dict(spec.hyperparameters))
    if spec.algorithm == SCRIPT_ALGORITHM:
        return algorithm.command(validated, entry_point=spec.entry_point, source_dir=code_dir)
    return algorithm.command(validated)


def teacher_model_uri(spec: JobSpec, settings: Settings) -> str | None:
    """Where the ``teacher`` hyperparameter's model lies, when it names a training job.

    A built-in algorithm's ``teacher`` is a model folder or a training job's name.
    A folder is read by the trainer itself; a job's model artifact is handed to
    it as the ``teacher`` channel (unless the job gives that channel itself).

    Returns:
        The teacher job's model artifact URL, or None when nothing needs fetching.

    Raises:
        InvalidInputError: The teacher is neither a model folder nor a training
            job, or that job has no model (yet).
    """
    from bcd.jobs import _store

    teacher = str(spec.hyperparameters.get("teacher", "")).strip()
    if spec.algorithm == SCRIPT_ALGORITHM or not teacher:
        return None
    if any(channel.name == "teacher" for channel in spec.channels):
        return None
    folder = Path(teacher).expanduser()
    if (folder / "model.onnx").is_file():
        return None
    try:
        record = _store.get_job(teacher, settings)
    except NotFoundError:
        raise InvalidInputError(
            f"teacher {teacher!r} is neither a model folder (with model.onnx and model.json) "
            "nor a training job; give a path or the name of a Completed training job"
        ) from None
    if record.status != "Completed" or not record.model_artifact:
        raise InvalidInputError(
            f"teacher job {teacher!r} is {record.status} and has no model to distil from; "
            "wait until it is Completed"
        )
    return str(record.model_artifact)
