"""The schema comes only from migrations, and matches the declared tables."""

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


def test_upgrade_creates_schema_matching_models(settings: Settings) -> None:
    _import_all_tables()
    engine = db.get_engine(settings)
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), db.Base.metadata)
    assert diff == [], f"tables and migrations disagree: {diff}"


def test_upgrade_is_idempotent_and_keeps_records(settings: Settings) -> None:
    engine = db.get_engine(settings)
    tables_before = set(inspect(engine).get_table_names())
    db.upgrade(engine)
    assert set(inspect(engine).get_table_names()) == tables_before
    assert "alembic_version" in tables_before
