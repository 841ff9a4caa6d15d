"""The inventory generation moves with every write to what the api caches, whichever
path writes it (ORM, Core on a bare connection, the api's ``run_sql``, raw SQL, COPY on
PostgreSQL), and stays put for writes the cached answers do not show (heartbeats)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import Connection, Engine, delete, insert, text, update
from sqlalchemy.orm import Session, sessionmaker

import accel
from accel.api.queries import Writer
from accel.conductor.agents import record_hello
from accel.db.engine import make_engine, migrate, session_factory
from accel.db.generation import copy_rows, read_generation
from accel.db.models import Agent, Attribute, Base, Deployable, Device
from accel.db.outage import DATABASE_AWAY
from tests.postgres import ThrowawayPostgres

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
TABLES = Base.metadata.tables
DEVICE_UUID = "0b7e5d43-3c6f-4a51-9d8e-2f1a0c9b8e7d"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    sessions = session_factory(engine)
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
    with sessions.begin() as session:
        agent = session.query(Agent).one()
        device = Device(
            uuid=DEVICE_UUID,
            agent=agent,
            type="GPU",
            vendor="10de",
            model="H100",
            hostname="node1",
            fingerprint="f",
            hardware="{}",
        )
        device.deployables.append(Deployable(name="gpu", num_accelerators=1))
        session.add(device)
    return sessions


def generation(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return read_generation(session)


def orm_flush(sessions: sessionmaker[Session], engine: Engine) -> None:
    with sessions.begin() as session:
        deployable = session.query(Deployable).one()
        session.add(Attribute(deployable_id=deployable.id, key="rc", value="PGPU"))


def orm_statement(sessions: sessionmaker[Session], engine: Engine) -> None:
    with sessions.begin() as session:
        session.execute(update(Device).values(status="maintaining"))


def core_on_a_connection(sessions: sessionmaker[Session], engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(TABLES["attributes"]))


def apis_run_sql(sessions: sessionmaker[Session], engine: Engine) -> None:
    writer = Writer(sessions, engine)

    def change(connection: Connection) -> None:
        connection.execute(update(TABLES["devices"]).values(vendor="8086"))

    try:
        anyio.run(writer.run_sql, change)
    finally:
        writer.close()


def raw_sql(sessions: sessionmaker[Session], engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("UPDATE deployables SET num_accelerators = 2"))


def driver_sql(sessions: sessionmaker[Session], engine: Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql('DELETE FROM "attributes"')


WRITES: list[Callable[[sessionmaker[Session], Engine], None]] = [
    orm_flush,
    orm_statement,
    core_on_a_connection,
    apis_run_sql,
    raw_sql,
    driver_sql,
]


@pytest.mark.parametrize("write", WRITES, ids=lambda write: write.__name__)
def test_every_write_path_moves_the_generation(
    sessions: sessionmaker[Session],
    engine: Engine,
    write: Callable[[sessionmaker[Session], Engine], None],
) -> None:
    before = generation(sessions)
    write(sessions, engine)
    assert generation(sessions) == before + 1


@pytest.mark.postgres
def test_a_copy_on_postgresql_moves_the_generation(postgres: ThrowawayPostgres) -> None:
    engine = make_engine(postgres.new_database())
    try:
        migrate(engine)
        sessions = session_factory(engine)
        record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
        before = generation(sessions)
        with sessions.begin() as session:
            agent_id = session.query(Agent.id).scalar()
            row = {
                "uuid": DEVICE_UUID,
                "agent_id": agent_id,
                "type": "GPU",
                "vendor": "10de",
                "model": "H100",
                "hostname": "node1",
                "fingerprint": "f",
                "hardware": "{}",
                "created_at": T0,
            }
            copy_rows(session, TABLES["devices"], [row])
        assert generation(sessions) == before + 1
        with sessions() as session:
            assert session.query(Device.uuid).scalar() == DEVICE_UUID
    finally:
        engine.dispose()


def test_writes_the_cache_does_not_show_leave_it(
    sessions: sessionmaker[Session], engine: Engine
) -> None:
    before = generation(sessions)
    # A heartbeat (the hottest write) touches agents only.
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0 + dt.timedelta(seconds=10))
    with engine.begin() as connection:
        agent = {"name": "node2", "endpoint": "x", "last_seen": T0}
        connection.execute(insert(TABLES["agents"]).values(agent))
    # A write to a watched table that is rolled back never happened.
    with pytest.raises(RuntimeError), sessions.begin() as session:
        session.execute(update(Device).values(status="maintaining"))
        raise RuntimeError("changed my mind")
    # ...and leaves nothing behind for the next transaction on its connection.
    with engine.begin() as connection:
        connection.execute(update(TABLES["agents"]).values(endpoint="y"))
    assert generation(sessions) == before


def test_only_copy_rows_writes_around_sqlalchemy() -> None:
    """The watch sees every statement SQLAlchemy runs; a driver's own connection, which
    it cannot see, is reached in one place, which tells it (copy_rows)."""
    package = Path(accel.__file__).parent
    reaching = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if "driver_connection" in path.read_text() or "raw_connection(" in path.read_text()
    }
    assert reaching == {"db/generation.py"}


@pytest.mark.postgres
def test_a_server_lost_before_the_commit_loses_the_write_and_its_bump(
    postgres: ThrowawayPostgres,
) -> None:
    """The bump runs inside the commit: a server that goes away there fails the
    commit as SQLAlchemy's own error (callers read it as the database away), and
    neither the write nor the bump happened."""
    engine = make_engine(postgres.new_database())
    try:
        migrate(engine)
        sessions = session_factory(engine)
        record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
        before = generation(sessions)
        with pytest.raises(DATABASE_AWAY), engine.begin() as connection:
            connection.execute(update(TABLES["agents"]).values(endpoint="y"))
            connection.execute(text("UPDATE devices SET status = 'maintaining'"))
            postgres.restart("immediate")
        assert generation(sessions) == before
        # ...and the next inventory write on the pool's fresh connection bumps once.
        core_on_a_connection(sessions, engine)
        assert generation(sessions) == before + 1
    finally:
        engine.dispose()
