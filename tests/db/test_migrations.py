"""The migrations build exactly the schema the models describe, on both backends."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from accel.db.engine import make_engine, migrate
from accel.db.models import Base


def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert differences == []


def test_migrating_twice_changes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        before = sorted(inspect(engine).get_table_names())
        migrate(engine)
        assert sorted(inspect(engine).get_table_names()) == before
        assert "operations" in before
    finally:
        engine.dispose()
