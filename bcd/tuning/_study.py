"""Where Optuna keeps each tuning job's study: an RDB storage beside bcd's metadata.

Optuna's RDB storage runs its own Alembic migrations with its own
``alembic_version`` table, so it cannot share a schema with bcd's tables.
It lives next to them instead, reachable from the same settings:

- SQLite ``…/bcd.db`` → the sibling file ``…/bcd-optuna.db`` (one machine,
  any number of worker processes);
- PostgreSQL → the same database, schema ``bcd_optuna`` (created on first
  use), so every machine pointed at the same ``BCD_DATABASE_URL`` shares the
  study.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from bcd.config import Settings, get_settings
from bcd.db import get_engine
from bcd.errors import InvalidInputError

if TYPE_CHECKING:
    import optuna

    from bcd.tuning._config import TuningJobConfig

logger = logging.getLogger(__name__)

POSTGRES_SCHEMA = "bcd_optuna"


def study_name_of(tuning_job_name: str) -> str:
    """The Optuna study name of a tuning job."""
    return f"bcd-tuning-{tuning_job_name}"


def storage_url(settings: Settings | None = None) -> tuple[str, dict[str, object]]:
    """The Optuna storage URL and engine arguments for ``settings``' metadata store.

    Returns:
        ``(url, engine_kwargs)`` for :class:`optuna.storages.RDBStorage`.

    Raises:
        InvalidInputError: For an in-memory SQLite database or an unsupported
            database kind.
    """
    settings = settings or get_settings()
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite":
        database = url.database
        if not database or database == ":memory:":
            raise InvalidInputError(
                "tuning needs a file or server database; BCD_DATABASE_URL points at an "
                "in-memory SQLite database"
            )
        path = Path(database)
        sibling = path.with_name(f"{path.stem}-optuna{path.suffix or '.db'}")
        return f"sqlite:///{sibling}", {"connect_args": {"timeout": 60}}
    if url.get_backend_name() == "postgresql":
        return (
            url.render_as_string(hide_password=False),
            {
                "connect_args": {"options": f"-csearch_path={POSTGRES_SCHEMA}"},
                "pool_pre_ping": True,
            },
        )
    raise InvalidInputError(
        f"tuning supports SQLite and PostgreSQL metadata stores, not {url.get_backend_name()!r}; "
        "set BCD_DATABASE_URL to one of them"
    )


def open_storage(settings: Settings | None = None) -> optuna.storages.RDBStorage:
    """Open (creating on first use) the Optuna storage beside the metadata store."""
    import optuna

    settings = settings or get_settings()
    url, engine_kwargs = storage_url(settings)
    if url.startswith("postgresql"):
        with get_engine(settings).begin() as connection:
            connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {POSTGRES_SCHEMA}"))
    else:
        settings.home.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    if url.startswith("sqlite"):
        # WAL: workers read while one writes, and a commit costs one sync instead of several.
        event.listen(storage.engine, "connect", _sqlite_wal)
        storage.engine.dispose()
    return storage


def _sqlite_wal(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def create_study(config: TuningJobConfig, settings: Settings | None = None) -> optuna.Study:
    """Create the tuning job's study (its sampler and pruner follow the strategy).

    A study left by an earlier create that crashed before recording the tuning
    job is loaded rather than refused.
    """
    import optuna

    from bcd.tuning._space import make_pruner, make_sampler

    return optuna.create_study(
        study_name=study_name_of(config.name),
        storage=open_storage(settings),
        sampler=make_sampler(config),
        pruner=make_pruner(config),
        direction="maximize" if config.maximize else "minimize",
        load_if_exists=True,
    )


def load_study(
    config: TuningJobConfig, settings: Settings | None = None, seed_offset: int = 0
) -> optuna.Study:
    """Load the tuning job's study with a fresh sampler (seeded ``+ seed_offset``) and pruner."""
    import optuna

    from bcd.tuning._space import make_pruner, make_sampler

    return optuna.load_study(
        study_name=study_name_of(config.name),
        storage=open_storage(settings),
        sampler=make_sampler(config, seed_offset),
        pruner=make_pruner(config),
    )


def delete_study(tuning_job_name: str, settings: Settings | None = None) -> None:
    """Delete a tuning job's study if it exists (cleanup after a failed create)."""
    import optuna

    try:
        optuna.delete_study(
            study_name=study_name_of(tuning_job_name), storage=open_storage(settings)
        )
    except KeyError:
        logger.debug("no study to delete for tuning job %s", tuning_job_name)
