"""A conductor's changes to accelerator requests: whole or not at all, repeatable, on time.

On both databases: a change is one transaction (a refusal of one part changes
nothing), a change repeated after its answer was lost answers what was done, a
change past the api's deadline commits nothing, and binds an older release left
half-done are failed once their grace is over.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import allocation
from accel.db.commit_deadline import TooLate, database_clock
from accel.db.engine import make_engine, session_factory
from accel.db.models import AcceleratorRequest, AttachHandle, Deployable, DeviceProfile
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.arq_schemas import ArqChanges
from accel.states import ArqState
from tests.api.test_api import fill

T0 = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
VF = "node1_0000:6b:00.1"


@pytest.fixture
def sessions(database_url: str, gpu_server: FakeSysfs) -> Iterator[sessionmaker[Session]]:
    fill(database_url, gpu_server)
    engine = make_engine(database_url)
    factory = session_factory(engine)
    with factory.begin() as session:
        session.add(
            DeviceProfile(
                name="qat",
                profile_json=json.dumps({"groups": [{"resources:CUSTOM_QAT": "1"}]}),
                created_at=T0,
            )
        )
    yield factory
    engine.dispose()


def new_arq(
    sessions: sessionmaker[Session], state: ArqState = ArqState.INITIAL, **values: object
) -> str:
    with sessions.begin() as session:
        profile = session.scalar(select(DeviceProfile).where(DeviceProfile.name == "qat"))
        arq = AcceleratorRequest(
            device_profile=profile, device_profile_group_id=0, state=state, **values
        )
        session.add(arq)
        session.flush()
        return arq.uuid


def rp_of(sessions: sessionmaker[Session], name: str = VF) -> str:
    with sessions() as session:
        rp = session.scalar(select(Deployable.rp_uuid).where(Deployable.name == name))
    assert rp is not None
    return rp


def binds(rp: str, *arqs: tuple[str, str]) -> ArqChanges:
    return ArqChanges.model_validate(
        {
            "bind": [
                {"arq_uuid": a, "hostname": "node1", "device_rp_uuid": rp, "instance_uuid": i}
                for a, i in arqs
            ]
        }
    )


def states(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(select(AcceleratorRequest.uuid, AcceleratorRequest.state))
        return {arq: state for arq, state in rows}


def handles_in_use(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(AttachHandle.id).where(AttachHandle.in_use)).all())


def test_a_bind_repeated_answers_what_was_done(sessions: sessionmaker[Session]) -> None:
    arq, instance = new_arq(sessions), str(uuid.uuid4())
    change = binds(rp_of(sessions), (arq, instance))
    [first] = allocation.apply_changes(sessions, change, T0)
    [again] = allocation.apply_changes(sessions, change, T0)
    assert (first.state, again.state, again.refused) == (ArqState.BOUND, ArqState.BOUND, False)
    assert handles_in_use(sessions) == 1

    # Asked for another instance, it is refused: that is not what was done.
    [other] = allocation.apply_changes(
        sessions, binds(rp_of(sessions), (arq, str(uuid.uuid4()))), T0
    )
    assert other.refused and "is Bound" in (other.reason or "")


def test_a_change_with_one_refused_part_changes_nothing(sessions: sessionmaker[Session]) -> None:
    rp = rp_of(sessions)
    taken = new_arq(sessions)
    allocation.apply_changes(sessions, binds(rp, (taken, str(uuid.uuid4()))), T0)
    free = new_arq(sessions)
    before = states(sessions)
    outcomes = allocation.apply_changes(
        sessions,
        binds(rp_of(sessions, "node1_0000:6b:00.2"), (free, str(uuid.uuid4()))).model_copy(
            update={"unbind": [uuid.uuid4()]}
        ),
        T0,
    )
    assert [o.refused for o in outcomes] == [True]
    assert states(sessions) == before and before[free] == ArqState.INITIAL
    assert handles_in_use(sessions) == 1


def test_a_change_past_its_deadline_commits_nothing(sessions: sessionmaker[Session]) -> None:
    arq = new_arq(sessions)
    with sessions() as session:
        passed = database_clock(session) - 0.001
    with pytest.raises(TooLate):
        allocation.apply_changes(
            sessions, binds(rp_of(sessions), (arq, str(uuid.uuid4()))), T0, passed
        )
    assert states(sessions)[arq] == ArqState.INITIAL
    assert handles_in_use(sessions) == 0
    with sessions() as session:
        later = database_clock(session) + 60
    [bound] = allocation.apply_changes(
        sessions, binds(rp_of(sessions), (arq, str(uuid.uuid4()))), T0, later
    )
    assert bound.state == ArqState.BOUND


def test_a_delete_repeated_is_done(sessions: sessionmaker[Session]) -> None:
    arq = new_arq(sessions)
    allocation.apply_changes(sessions, binds(rp_of(sessions), (arq, str(uuid.uuid4()))), T0)
    doomed = ArqChanges.model_validate({"delete": [arq]})
    for _ in range(2):
        [outcome] = allocation.apply_changes(sessions, doomed, T0)
        assert (outcome.state, outcome.refused) == ("Deleted", False)
    assert arq not in states(sessions) and handles_in_use(sessions) == 0


def test_binds_left_started_are_failed_after_their_grace(sessions: sessionmaker[Session]) -> None:
    rp = rp_of(sessions)
    where = {"hostname": "node1", "device_rp_uuid": rp, "instance_uuid": str(uuid.uuid4())}
    old = new_arq(sessions, ArqState.BIND_STARTED, updated_at=T0 - dt.timedelta(minutes=5), **where)
    recent = new_arq(
        sessions, ArqState.BIND_STARTED, updated_at=T0 - dt.timedelta(seconds=5), **where
    )

    assert allocation.fail_abandoned_binds(sessions, T0, grace=60) == [old]
    assert states(sessions)[old] == ArqState.BIND_FAILED
    assert states(sessions)[recent] == ArqState.BIND_STARTED  # an older conductor may finish it
    assert allocation.fail_abandoned_binds(sessions, T0, grace=60) == []
    later = T0 + dt.timedelta(minutes=2)
    assert allocation.fail_abandoned_binds(sessions, later, grace=60) == [recent]
    assert handles_in_use(sessions) == 0
