"""The contract between an algorithm and the job engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

from bcd.algorithms._hyperparameters import Hyperparameter, RawValue


class Algorithm(ABC):
    """A training algorithm the job engine can run in a child process.

    The engine calls :meth:`validate_hyperparameters` when a job is created (so
    bad input fails before anything starts), then runs :meth:`command` as the
    job's process under the training job contract (``SM_*`` environment, see
    ``docs/architecture.md``) and scrapes :attr:`metric_definitions` from its
    output. Implementations are stateless and safe to share between threads.

    Attributes:
        name: The registry name, e.g. ``"cnn"``.
        description: One line for listings.
    """

    name: str
    description: str

    @property
    @abstractmethod
    def hyperparameters(self) -> tuple[Hyperparameter, ...]:
        """The hyperparameters this algorithm accepts (empty: free-form)."""

    @property
    @abstractmethod
    def metric_definitions(self) -> list[dict[str, str]]:
        """``[{"Name": ..., "Regex": ...}]`` to scrape from the job's output."""

    @abstractmethod
    def validate_hyperparameters(self, raw: Mapping[str, RawValue]) -> dict[str, Any]:
        """Check hyperparameters and fill in defaults.

        Args:
            raw: Name to value; values may be strings (as SageMaker passes
                them), numbers or booleans.

        Returns:
            The complete, typed hyperparameters.

        Raises:
            InvalidInputError: For an unknown name (the message lists the valid
                ones), a wrong type or an out-of-range value.
        """

    @abstractmethod
    def command(self, hyperparameters: Mapping[str, Any], **options: Any) -> list[str]:
        """The argv of one training process.

        Args:
            hyperparameters: Output of :meth:`validate_hyperparameters`.
            **options: Algorithm-specific options (``entry_point`` and
                ``source_dir`` for ``script``).

        Returns:
            ``[sys.executable, ...]``, hyperparameters given as ``--name value``.

        Raises:
            InvalidInputError: When a required option is missing or wrong.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
