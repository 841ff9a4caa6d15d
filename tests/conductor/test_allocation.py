"""Binding accelerator requests: a bind takes a free accelerator of a ready deployable
that fits its group, or fails saying why; the last accelerator goes to one request.

The node is the example GPU server's, stored as its agent would report it; the
requests bind to its QAT card's VFs (one accelerator each).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import allocation
from accel.db.engine import make_engine, session_factory
from accel.db.models import (
    AcceleratorRequest,
    Agent,
    AttachHandle,
    Device,
    DeviceProfile,
)
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.arq_schemas import ARQ_DELETED, ArqChanges, ArqOutcome
from accel.states import AgentState, ArqState, DeviceStatus
from tests.api.test_api import fill
from tests.conductor.test_arq_changes import rp_of

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)
VF = "node1_0000:6b:00.1"
QAT = "0000:6b:00.0"


@pytest.fixture
def sessions(database_url: str, gpu_server: FakeSysfs) -> Iterator[sessionmaker[Session]]:
    fill(database_url, gpu_server)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def request(sessions: sessionmaker[Session], *groups: dict[str, str]) -> str:
    """A new Initial request for the first group of a profile of these groups."""
    with sessions.begin() as session:
        profile = DeviceProfile(
            name=str(uuid.uuid4()), profile_json=json.dumps({"groups": list(groups)}), created_at=T0
        )
        arq = AcceleratorRequest(device_profile=profile, device_profile_group_id=0)
        session.add(arq)
        session.flush()
        return arq.uuid


def binds(rp: str, *arqs: str, hostname: str = "node1") -> ArqChanges:
    """Binds of ``arqs`` to provider ``rp`` on ``hostname``, each for a new instance."""
    return ArqChanges.model_validate(
        {
            "bind": [
                {"arq_uuid": arq, "hostname": hostname, "device_rp_uuid": rp}
                | {"instance_uuid": str(uuid.uuid4())}
                for arq in arqs
            ]
        }
    )


def bind(sessions: sessionmaker[Session], arq: str, rp: str, hostname: str = "node1") -> ArqOutcome:
    [outcome] = allocation.apply_changes(sessions, binds(rp, arq, hostname=hostname), T0)
    return outcome


def change(sessions: sessionmaker[Session], **changes: list[str]) -> list[ArqOutcome]:
    return allocation.apply_changes(sessions, ArqChanges.model_validate(changes), T0)


def handles_in_use(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return len(session.scalars(select(AttachHandle.id).where(AttachHandle.in_use)).all())


def stored(sessions: sessionmaker[Session], arq: str) -> AcceleratorRequest:
    with sessions() as session:
        found = session.scalar(select(AcceleratorRequest).where(AcceleratorRequest.uuid == arq))
    assert found is not None
    return found


QAT_GROUP = {"resources:CUSTOM_QAT": "1"}


def test_a_bind_takes_a_free_accelerator_of_the_named_deployable(
    sessions: sessionmaker[Session],
) -> None:
    arq = request(sessions, QAT_GROUP)
    outcome = bind(sessions, arq, rp_of(sessions))
    assert (outcome.state, outcome.reason, outcome.refused) == (ArqState.BOUND, None, False)
    bound = stored(sessions, arq)
    assert (bound.hostname, bound.device_rp_uuid) == ("node1", rp_of(sessions))
    assert bound.attach_handle_id is not None and bound.deployable_id is not None
    assert handles_in_use(sessions) == 1


@pytest.mark.parametrize(
    ("device_change", "reason"),
    [
        ({"present": False}, "has vanished"),
        ({"status": DeviceStatus.MAINTAINING}, "is in maintenance"),
        ({"setup_required": True}, "needs setup or a reboot"),
        ({"reboot_required": True}, "needs setup or a reboot"),
    ],
)
def test_a_device_that_is_not_ready_fails_the_bind_saying_why(
    sessions: sessionmaker[Session], device_change: dict[str, Any], reason: str
) -> None:
    with sessions.begin() as session:
        session.execute(update(Device).where(Device.pci_address == QAT).values(**device_change))
    arq = request(sessions, QAT_GROUP)
    outcome = bind(sessions, arq, rp_of(sessions))
    assert outcome.state == ArqState.BIND_FAILED and reason in (outcome.reason or "")
    assert stored(sessions, arq).bind_failure == outcome.reason
    assert handles_in_use(sessions) == 0


def test_a_node_whose_agent_is_down_takes_no_binds(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        session.execute(update(Agent).values(state=AgentState.DOWN))
    outcome = bind(sessions, request(sessions, QAT_GROUP), rp_of(sessions))
    assert (outcome.state, outcome.reason) == (
        ArqState.BIND_FAILED,
        "the agent of host node1 is DOWN",
    )


def test_a_deployable_of_another_resource_class_does_not_fit(
    sessions: sessionmaker[Session],
) -> None:
    outcome = bind(sessions, request(sessions, {"resources:PGPU": "1"}), rp_of(sessions))
    assert outcome.state == ArqState.BIND_FAILED
    assert outcome.reason == (f"deployable {VF} offers CUSTOM_QAT, the request asks for PGPU")


def test_required_and_forbidden_traits_are_honoured(sessions: sessionmaker[Session]) -> None:
    missing = request(sessions, QAT_GROUP | {"trait:CUSTOM_QAT_AMD": "required"})
    outcome = bind(sessions, missing, rp_of(sessions))
    assert outcome.reason == f"deployable {VF} lacks the required trait CUSTOM_QAT_AMD"

    forbidden = request(sessions, QAT_GROUP | {"trait:CUSTOM_QAT_INTEL": "forbidden"})
    outcome = bind(sessions, forbidden, rp_of(sessions))
    assert outcome.reason == f"deployable {VF} has the forbidden trait CUSTOM_QAT_INTEL"

    fits = request(sessions, QAT_GROUP | {"trait:CUSTOM_QAT_INTEL": "required"})
    assert bind(sessions, fits, rp_of(sessions)).state == ArqState.BOUND


def test_a_provider_that_is_not_on_the_named_host_fails_the_bind(
    sessions: sessionmaker[Session],
) -> None:
    outcome = bind(sessions, request(sessions, QAT_GROUP), rp_of(sessions), hostname="node2")
    assert outcome.state == ArqState.BIND_FAILED
    assert outcome.reason == (
        f"no deployable with resource provider {rp_of(sessions)} on host node2"
    )


def test_the_last_accelerator_goes_to_one_request_of_one_change(
    sessions: sessionmaker[Session],
) -> None:
    first, second = request(sessions, QAT_GROUP), request(sessions, QAT_GROUP)
    rp = rp_of(sessions)
    outcomes = allocation.apply_changes(sessions, binds(rp, first, second), T0)
    assert sorted(o.state for o in outcomes) == [ArqState.BIND_FAILED, ArqState.BOUND]
    [failed] = [o for o in outcomes if o.state == ArqState.BIND_FAILED]
    assert failed.reason == f"deployable {VF} has no free accelerator left"
    assert handles_in_use(sessions) == 1


def test_racing_binds_for_the_last_accelerator_bind_exactly_one(
    sessions: sessionmaker[Session],
) -> None:
    rp = rp_of(sessions)
    arqs = [request(sessions, QAT_GROUP) for _ in range(4)]
    with ThreadPoolExecutor(len(arqs)) as pool:
        outcomes = list(pool.map(lambda arq: bind(sessions, arq, rp), arqs))
    assert sorted(o.state for o in outcomes) == [ArqState.BIND_FAILED] * 3 + [ArqState.BOUND]
    assert handles_in_use(sessions) == 1


def test_an_unbind_frees_the_accelerator_for_the_next_request(
    sessions: sessionmaker[Session],
) -> None:
    rp = rp_of(sessions)
    first = request(sessions, QAT_GROUP)
    bind(sessions, first, rp)
    [outcome] = change(sessions, unbind=[first])
    assert outcome.state == ArqState.UNBOUND
    unbound = stored(sessions, first)
    assert (unbound.attach_handle_id, unbound.hostname, unbound.instance_uuid) == (None,) * 3
    assert handles_in_use(sessions) == 0
    assert bind(sessions, request(sessions, QAT_GROUP), rp).state == ArqState.BOUND
    # An unbound request may be bound again.
    assert bind(sessions, first, rp_of(sessions, "node1_0000:6b:00.2")).state == ArqState.BOUND


def test_deleting_a_bound_request_frees_its_accelerator(sessions: sessionmaker[Session]) -> None:
    arq = request(sessions, QAT_GROUP)
    bind(sessions, arq, rp_of(sessions))
    [outcome] = change(sessions, delete=[arq])
    assert outcome.state == ARQ_DELETED
    assert handles_in_use(sessions) == 0


def test_a_failed_request_is_not_bindable_until_unbound(sessions: sessionmaker[Session]) -> None:
    arq = request(sessions, {"resources:PGPU": "1"})
    assert bind(sessions, arq, rp_of(sessions)).state == ArqState.BIND_FAILED
    refused = bind(sessions, arq, rp_of(sessions))
    assert refused.refused
    assert refused.reason is not None and "is BindFailed" in refused.reason


def test_an_unbind_of_an_unknown_request_is_refused(sessions: sessionmaker[Session]) -> None:
    unknown = str(uuid.uuid4())
    [outcome] = change(sessions, unbind=[unknown])
    assert (outcome.uuid, outcome.refused, outcome.reason) == (unknown, True, "not found")


def test_a_requests_group_is_read_from_its_profile_by_index() -> None:
    groups = [{"resources:PGPU": "1"}, {"resources:CUSTOM_QAT": "2"}]
    profile = DeviceProfile(name="two", profile_json=json.dumps({"groups": groups}))
    assert allocation.group_of(profile, 1) == {"resources:CUSTOM_QAT": "2"}
