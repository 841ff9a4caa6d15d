"""A fresh database migrated to the newest schema, for tests that read and write rows
without running a component (those that do run one use tests/processes.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from accel.db.engine import make_engine, migrate, session_factory


@contextmanager
def migrated_sessions(url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions on ``url``, migrated first; the engine is disposed of afterwards."""
    engine = make_engine(url)
    try:
        migrate(engine)
        yield session_factory(engine)
    finally:
        engine.dispose()
