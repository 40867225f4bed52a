"""The metadata store: SQLAlchemy over SQLite (default) or PostgreSQL.

Each layer declares its tables on :class:`Base` in its own ``_tables.py``;
the schema is created and upgraded only by Alembic migrations
(``bcd/db/migrations``), so an upgrade of bcd never loses a user's records.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from bcd.config import Settings, get_settings

_MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration; a store already there skips Alembic entirely (a faster
# start). tests/db/test_migrations.py checks it against the migration scripts.
SCHEMA_HEAD = "0006"
_lock = threading.Lock()
_engines: dict[str, Engine] = {}
_upgraded: set[str] = set()


class Base(DeclarativeBase):
    """Declarative base of every bcd table."""

    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict: JSON,
        list: JSON,
        dt.datetime: DateTime(timezone=True),
    }


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC (what every timestamp column holds)."""
    return dt.datetime.now(dt.UTC)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the server read while a job process writes; busy_timeout makes
    # concurrent writers (parallel jobs, tuning workers) wait instead of failing.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def get_engine(settings: Settings | None = None) -> Engine:
    """The engine for ``settings.resolved_database_url``, schema upgraded to head.

    Engines are cached per URL; the first call per URL in a process runs the
    Alembic upgrade (a no-op when the schema is current).
    """
    settings = settings or get_settings()
    url = settings.resolved_database_url
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                settings.home.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[url] = engine
        if url not in _upgraded:
            if _current_revision(engine) != SCHEMA_HEAD:
                upgrade(engine)
            _upgraded.add(url)
    return engine


def _current_revision(engine: Engine) -> str | None:
    """The store's Alembic revision, or ``None`` for a new or unreadable store."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations on ``engine`` up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def forget_engines() -> None:
    """Drop the cached engines without closing their connections.

    For a process forked from one that used the store: the inherited
    connections belong to the parent, so the child opens its own.
    """
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


def dispose_engines() -> None:
    """Close every cached engine (tests)."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
        _upgraded.clear()


@contextlib.contextmanager
def session_scope(settings: Settings | None = None) -> Iterator[Session]:
    """A transaction: commits on success, rolls back on any exception."""
    factory = sessionmaker(bind=get_engine(settings), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
