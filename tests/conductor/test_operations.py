"""Which setup operations a conductor accepts, and who drives them, on both databases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import operations
from accel.conductor.presence import record_conductor
from accel.db.commit_deadline import TooLate, database_clock
from accel.db.engine import make_engine, session_factory
from accel.db.models import Agent, AttachHandle, Deployable, Device, Operation
from accel.db.operation_view import asked_since
from accel.driver.fake_sysfs import FakeSysfs
from accel.errors import Conflict, InvalidInput, NotFound
from accel.internal.schemas import Kind
from accel.internal.setup_schemas import OperationRequest, SetupProgress
from accel.states import AgentState, OperationState
from tests.api.test_api import fill

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
IDLE_QAT = "0000:70:00.0"


@pytest.fixture
def sessions(database_url: str, gpu_server: FakeSysfs) -> Iterator[sessionmaker[Session]]:
    fill(database_url, gpu_server)  # node1 says hello and reports the GPU server
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def device_at(sessions: sessionmaker[Session], address: str) -> str:
    with sessions() as session:
        uuid = session.scalar(select(Device.uuid).where(Device.pci_address == address))
    assert uuid is not None
    return uuid


def ask(device: str, setup: dict[str, Any], dry_run: bool = False) -> OperationRequest:
    return OperationRequest.model_validate(
        {"device_uuid": device, "setup": setup, "dry_run": dry_run}
    )


ENABLE_TWO = {"action": "enable_vfs", "num_vfs": 2}


def test_an_accepted_operation_is_pending_and_driven_by_its_conductor(
    sessions: sessionmaker[Session],
) -> None:
    device = device_at(sessions, IDLE_QAT)
    view = operations.accept(sessions, ask(device, ENABLE_TWO), "conductor-a", T0)
    assert (view.state, view.kind, view.address, view.hostname) == (
        OperationState.PENDING,
        Kind.QAT,
        IDLE_QAT,
        "node1",
    )
    [work] = operations.unfinished(sessions, "conductor-a", T0)
    assert (work.uuid, work.agent_endpoint, work.call.address) == (
        str(view.uuid),
        "127.0.0.1:6671",
        IDLE_QAT,
    )
    assert operations.unfinished(sessions, "conductor-b", T0) == []


def test_a_silent_conductors_operations_are_taken_over(sessions: sessionmaker[Session]) -> None:
    vouched = T0 + dt.timedelta(seconds=30)
    record_conductor(sessions, "conductor-a", "127.0.0.1:1", T0, alive_until=vouched)
    view = operations.accept(
        sessions, ask(device_at(sessions, IDLE_QAT), ENABLE_TWO), "conductor-a", T0
    )
    # conductor-a's record vouches for it until "vouched": its operation stays its own.
    assert operations.unfinished(sessions, "conductor-b", vouched) == []
    later = vouched + dt.timedelta(microseconds=1)
    [work] = operations.unfinished(sessions, "conductor-b", later)
    assert work.uuid == str(view.uuid)
    assert operations.unfinished(sessions, "conductor-a", later) == []


def test_one_unfinished_operation_per_device(sessions: sessionmaker[Session]) -> None:
    device = device_at(sessions, IDLE_QAT)
    first = operations.accept(sessions, ask(device, ENABLE_TWO), "c", T0)
    with pytest.raises(Conflict, match=str(first.uuid)):
        operations.accept(sessions, ask(device, ENABLE_TWO), "c", T0)
    done = SetupProgress(operation=first.uuid, state=OperationState.DONE, steps=["wrote 2"])
    operations.record_progress(sessions, done, T0)
    second = operations.accept(sessions, ask(device, ENABLE_TWO), "c", T0)
    assert second.uuid != first.uuid


def test_a_finished_change_resyncs_the_node_and_a_final_state_is_final(
    sessions: sessionmaker[Session],
) -> None:
    view = operations.accept(sessions, ask(device_at(sessions, IDLE_QAT), ENABLE_TWO), "c", T0)
    with sessions.begin() as session:
        session.execute(update(Agent).values(next_sync_at=T0 + dt.timedelta(hours=1)))
    finished_at = T0 + dt.timedelta(seconds=5)
    operations.record_progress(
        sessions,
        SetupProgress(operation=view.uuid, state=OperationState.FAILED, error="EBUSY"),
        finished_at,
    )
    operations.record_progress(
        sessions, SetupProgress(operation=view.uuid, state=OperationState.DONE), finished_at
    )
    operations.fail(sessions, str(view.uuid), "late", finished_at)
    with sessions() as session:
        agent = session.scalars(select(Agent)).one()
    assert agent.next_sync_at == finished_at
    assert operations.unfinished(sessions, "c", T0) == []  # FAILED stayed FAILED
    with sessions() as session:
        state = session.scalar(select(Operation.state).where(Operation.uuid == str(view.uuid)))
    assert state == OperationState.FAILED


@pytest.mark.parametrize(
    ("address", "setup", "error", "words"),
    [
        (IDLE_QAT, {"action": "enable_vfs", "num_vfs": 17}, InvalidInput, "sriov_totalvfs"),
        (IDLE_QAT, {"action": "mig_mode", "enabled": True}, InvalidInput, "QAT"),
        (IDLE_QAT, {"action": "program", "bitstream": "a.gbs"}, InvalidInput, "QAT"),
        ("0000:86:00.0", {"action": "enable_vfs", "num_vfs": 1}, InvalidInput, "SR-IOV"),
    ],
)
def test_actions_a_device_cannot_take_are_refused(
    sessions: sessionmaker[Session],
    address: str,
    setup: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        operations.accept(sessions, ask(device_at(sessions, address), setup), "c", T0)
    assert operations.unfinished(sessions, "c", T0) == []


def test_allocated_vanished_or_unreachable_hardware_is_left_alone(
    sessions: sessionmaker[Session],
) -> None:
    device = device_at(sessions, "0000:6b:00.0")
    with sessions.begin() as session:
        device_id = session.scalar(select(Device.id).where(Device.uuid == device))
        deployables = select(Deployable.id).where(Deployable.device_id == device_id)
        session.execute(
            update(AttachHandle)
            .where(AttachHandle.deployable_id.in_(deployables))
            .values(in_use=True)
        )
    with pytest.raises(Conflict, match="allocated"):
        operations.accept(sessions, ask(device, ENABLE_TWO), "c", T0)
    # Looking is harmless: a dry run of an allocated device is allowed.
    assert operations.accept(sessions, ask(device, ENABLE_TWO, dry_run=True), "c", T0)

    idle = device_at(sessions, IDLE_QAT)
    with sessions.begin() as session:
        session.execute(update(Agent).values(state=AgentState.DOWN))
    with pytest.raises(Conflict, match=AgentState.DOWN):
        operations.accept(sessions, ask(idle, ENABLE_TWO), "c", T0)
    with sessions.begin() as session:
        session.execute(update(Agent).values(state=AgentState.UP))
        session.execute(update(Device).where(Device.uuid == idle).values(present=False))
    with pytest.raises(Conflict, match="vanished"):
        operations.accept(sessions, ask(idle, ENABLE_TWO), "c", T0)
    with pytest.raises(NotFound):
        operations.accept(
            sessions, ask("9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d", ENABLE_TWO), "c", T0
        )


def test_an_operation_past_the_callers_deadline_is_not_stored(
    sessions: sessionmaker[Session],
) -> None:
    device = device_at(sessions, IDLE_QAT)
    asked = ask(device, ENABLE_TWO).model_copy(update={"requested_by": "alice"})
    with sessions() as session:
        now = database_clock(session)
    with pytest.raises(TooLate):
        operations.accept(sessions, asked, "conductor-a", T0, commit_before=now - 0.001)
    with sessions() as session:
        assert session.scalar(select(Operation.id)) is None
        assert asked_since(session, asked, 0) is None

    view = operations.accept(sessions, asked, "conductor-a", T0, commit_before=now + 60)
    with sessions() as session:
        found = asked_since(session, asked, 0)
        other = asked_since(session, asked.model_copy(update={"requested_by": "bob"}), 0)
    assert found is not None and found.uuid == view.uuid
    assert other is None  # someone else's request did not start it
