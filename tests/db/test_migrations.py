"""The schema comes only from migrations and matches the declared tables (SQLite, PostgreSQL)."""

from __future__ import annotations

import importlib
import pkgutil

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import bcd
from bcd import db
from bcd.config import Settings


def _import_all_tables() -> None:
    for module in pkgutil.walk_packages(bcd.__path__, "bcd."):
        if module.name.endswith("._tables"):
            importlib.import_module(module.name)


def test_upgrade_creates_schema_matching_models(store_settings: Settings) -> None:
    _import_all_tables()
    engine = db.get_engine(store_settings)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), db.Base.metadata)
    assert diff == [], f"tables and migrations disagree: {diff}"


def test_upgrade_is_idempotent_and_keeps_records(store_settings: Settings) -> None:
    engine = db.get_engine(store_settings)
    tables_before = set(inspect(engine).get_table_names())
    db.upgrade(engine)
    assert set(inspect(engine).get_table_names()) == tables_before
    assert "alembic_version" in tables_before


def test_schema_head_constant_matches_the_newest_migration() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(db._MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == db.SCHEMA_HEAD


def test_a_store_behind_head_is_upgraded_on_first_use(store_settings: Settings) -> None:
    engine = db.get_engine(store_settings)
    # Emulate a store made by the release before slides and batch transform existed.
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '0004'")
        connection.exec_driver_sql("DROP TABLE IF EXISTS transform_jobs")
        connection.exec_driver_sql("DROP TABLE IF EXISTS slide_analyses")
    db.dispose_engines()
    engine = db.get_engine(store_settings)
    with engine.connect() as connection:
        version = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    assert version == db.SCHEMA_HEAD
    assert {"slide_analyses", "transform_jobs"} <= set(inspect(engine).get_table_names())
