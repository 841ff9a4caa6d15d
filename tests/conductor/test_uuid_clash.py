"""A node that reports a hardware uuid another node holds loses that entry only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.reconcile import FinishedSync, store_inventories, store_inventory
from accel.db.models import Agent, Alarm, Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction, build_gpu_server
from accel.internal.schemas import DriverOutcome, HardwareList, Kind
from accel.states import AlarmKind, AlarmState

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
OK = [DriverOutcome(type=Kind.GPU, endpoint="x:1", state="ok")]


def gpus(root: Path, node: str, extra_bus: int | None = None) -> HardwareList:
    tree = build_gpu_server(root)
    if extra_bus is not None:
        tree.add(FakeFunction(f"0000:{extra_bus:02x}:00.0", 0x10DE, 0x2331, 0x030200))
    return HardwareList(hardware=discover(Kind.GPU, tree.root, node), drivers=OK)


def owners(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions() as session:
        rows = session.execute(select(Device.uuid, Agent.name).join(Agent)).all()
    return {uuid: name for uuid, name in rows}


def clash_alarms(
    sessions: sessionmaker[Session], state: AlarmState = AlarmState.ACTIVE
) -> list[str]:
    with sessions() as session:
        return sorted(
            session.scalars(
                select(Alarm.subject).where(
                    Alarm.kind == AlarmKind.HARDWARE_UUID_CLASH, Alarm.state == state
                )
            )
        )


@pytest.fixture
def two_nodes(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    for index, name in enumerate(("node1", "node2")):
        record_hello(sessions, name, f"127.0.0.1:{6671 + index}", "1.5", T0)
    return sessions


def test_only_the_clashing_entries_are_refused_each_with_an_alarm(
    two_nodes: sessionmaker[Session], tmp_path: Path
) -> None:
    first = gpus(tmp_path / "a", "node1")
    store_inventory(two_nodes, "node1", first, T0, T0, T0)
    # node2's driver names its hardware as node1's (a copied tree, a wrong --node),
    # and has one GPU of its own.
    copied = gpus(tmp_path / "b", "node1", extra_bus=0xE1)
    own = {str(e.uuid) for e in copied.hardware} - {str(e.uuid) for e in first.hardware}
    diff = store_inventory(two_nodes, "node2", copied, T0, T0, T0)
    assert diff.added == sorted(own) or set(diff.added) == own
    stored = owners(two_nodes)
    assert {u for u, name in stored.items() if name == "node1"} == {
        str(e.uuid) for e in first.hardware
    }
    assert {u for u, name in stored.items() if name == "node2"} == own
    clashing = sorted(str(e.uuid) for e in first.hardware)
    assert clash_alarms(two_nodes) == clashing
    with two_nodes() as session:
        node2 = session.scalar(select(Agent).where(Agent.name == "node2"))
        assert node2 is not None and node2.last_sync_error is None
        message = session.scalar(select(Alarm.message).where(Alarm.subject == clashing[0]))
    assert message is not None and "node2" in message and "node1" in message

    # The same report again changes nothing and raises nothing new.
    later = T0 + dt.timedelta(minutes=1)
    diff = store_inventory(two_nodes, "node2", copied, later, later, later)
    assert diff.unchanged == 1 and not diff.added
    assert clash_alarms(two_nodes) == clashing

    # node2 stops reporting them (its driver fixed): the alarms clear, node1 keeps all.
    fixed = HardwareList(hardware=[e for e in copied.hardware if str(e.uuid) in own], drivers=OK)
    even_later = T0 + dt.timedelta(minutes=2)
    store_inventory(two_nodes, "node2", fixed, even_later, even_later, even_later)
    assert clash_alarms(two_nodes) == []
    assert clash_alarms(two_nodes, AlarmState.CLEARED) == clashing
    assert owners(two_nodes) == stored


def test_two_nodes_claiming_one_new_uuid_in_one_batch_keep_it_for_the_first(
    two_nodes: sessionmaker[Session], tmp_path: Path
) -> None:
    report = gpus(tmp_path / "a", "node1")
    outcomes = store_inventories(
        two_nodes,
        [
            FinishedSync("node1", report, T0, T0, T0),
            FinishedSync("node2", report, T0, T0, T0),
        ],
    )
    assert not any(isinstance(outcome, Exception) for outcome in outcomes)
    assert set(owners(two_nodes).values()) == {"node1"}
    assert clash_alarms(two_nodes) == sorted(str(e.uuid) for e in report.hardware)
