"""A stored setup operation on the wire (accel.db.operation_view), on SQLite and
PostgreSQL: ``operation_view`` shows every column the API shows, and ``asked_since``
finds the operation a request started, never one asked before it or by anyone else.

The rows are written as the conductor writes them (``operations.accept``); that path
itself, with ``asked_since`` after a lost answer, is tests/conductor/test_operations.py.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from accel.db.models import Operation
from accel.db.operation_view import asked_since, operation_view
from accel.internal.schemas import Kind
from accel.internal.setup_schemas import EnableVfs, OperationRequest, SetMigMode
from accel.states import OperationState
from tests.databases import migrated_sessions

T0 = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
DEPLOYABLE = uuid.UUID(int=2)
ASKED = OperationRequest(
    device_uuid=uuid.UUID(int=1),
    setup=EnableVfs(action="enable_vfs", num_vfs=4),
    requested_by="alice",
    project_id="alice-project",
)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def sessions(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[sessionmaker[Session]]:
    """One migrated database per backend for the module: each test asks about a device
    of its own, so the operations of others are never the ones it finds."""
    url = f"sqlite:///{tmp_path_factory.mktemp('operations') / 'accel.db'}"
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres").new_database()
    with migrated_sessions(url) as sessions:
        yield sessions


@pytest.fixture
def asked() -> OperationRequest:
    """A request for a device no other test asks about."""
    return ASKED.model_copy(update={"device_uuid": uuid.uuid4()})


def store(sessions: sessionmaker[Session], request: OperationRequest, **columns: object) -> int:
    """``request``'s operation as the conductor stores it; its id."""
    stored: dict[str, object] = {
        "device_uuid": str(request.device_uuid),
        "deployable_uuid": str(request.deployable_uuid) if request.deployable_uuid else None,
        "agent_name": "node1",
        "address": "0000:3b:00.0",
        "kind": "NIC",
        "action": request.setup.action,
        "params_json": request.setup.model_dump_json(),
        "dry_run": request.dry_run,
        "state": OperationState.PENDING,
        "steps_json": "[]",
        "requested_by": request.requested_by,
        "project_id": request.project_id,
        "created_at": T0,
    }
    with sessions.begin() as session:
        operation = Operation(**(stored | columns))
        session.add(operation)
        session.flush()
        return operation.id


def test_the_view_shows_the_stored_operation_as_the_api_does(
    sessions: sessionmaker[Session], asked: OperationRequest
) -> None:
    done = T0 + dt.timedelta(seconds=3)
    found = store(
        sessions,
        asked,
        state=OperationState.DONE,
        steps_json='["wrote 4 to sriov_numvfs", "4 VFs appeared"]',
        reboot_required=True,
        updated_at=done,
        finished_at=done,
    )
    with sessions() as session:
        operation = session.get(Operation, found)
        assert operation is not None
        view = operation_view(operation)
    assert (view.uuid, view.device_uuid, view.deployable_uuid) == (
        uuid.UUID(operation.uuid),
        asked.device_uuid,
        None,
    )
    assert (view.hostname, view.address, view.kind) == ("node1", "0000:3b:00.0", Kind.NIC)
    assert (view.action, view.params) == ("enable_vfs", ASKED.setup.model_dump())
    assert (view.state, view.steps) == (
        OperationState.DONE,
        ["wrote 4 to sriov_numvfs", "4 VFs appeared"],
    )
    assert (view.dry_run, view.reboot_required, view.error) == (False, True, None)
    assert view.requested_by == "alice"
    # Times come back in UTC on both backends, as the API shows them.
    assert (view.created_at, view.updated_at, view.finished_at) == (T0, done, done)


def test_the_operation_a_request_started_is_found_after_the_callers_mark(
    sessions: sessionmaker[Session], asked: OperationRequest
) -> None:
    before = store(sessions, asked)  # the same request, asked earlier: not this one's
    with sessions() as session:
        assert asked_since(session, asked, before) is None
    started = store(sessions, asked)
    again = store(sessions, asked)
    with sessions() as session:
        found = asked_since(session, asked, before)
        stored = session.get(Operation, started)
        assert stored is not None
        assert found is not None and str(found.uuid) == stored.uuid  # the first after it
        assert asked_since(session, asked, again) is None


@pytest.mark.parametrize(
    "otherwise",
    [
        {"deployable_uuid": DEPLOYABLE},
        {"setup": EnableVfs(action="enable_vfs", num_vfs=8)},
        {"setup": SetMigMode(action="mig_mode", enabled=True)},
        {"dry_run": True},
        {"requested_by": "bob"},
        {"requested_by": None},
        {"project_id": "bob-project"},
        {"device_uuid": None},  # another device
    ],
)
def test_an_operation_asked_otherwise_is_not_the_requests(
    sessions: sessionmaker[Session], asked: OperationRequest, otherwise: dict[str, object]
) -> None:
    if "device_uuid" in otherwise:
        otherwise = {"device_uuid": uuid.uuid4()}
    other = asked.model_copy(update=otherwise)
    store(sessions, other)
    with sessions() as session:
        assert asked_since(session, asked, 0) is None
        assert asked_since(session, other, 0) is not None
