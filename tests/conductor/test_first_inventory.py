"""An agent's first inventory in bulk: every reported device, its deployables, their
attributes and attach handles, for several agents in one call, with the ids linking
them right, on SQLite (INSERT ... RETURNING) and PostgreSQL (sequences and COPY).

That these are the very rows the object path writes is test_batched_syncs.py's.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import record_hello
from accel.conductor.first_inventory import FirstInventory, insert_first_inventories
from accel.conductor.hardware_rows import plan_deployables
from accel.db.generation import read_generation
from accel.db.models import Agent, AttachHandle, Attribute, Deployable, Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import build_gpu_server
from accel.internal.schemas import HardwareEntry, Kind
from accel.states import DeviceStatus

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


def inventory(sessions: sessionmaker[Session], root: Path, node: str) -> FirstInventory:
    record_hello(sessions, node, f"127.0.0.1:{6000 + len(root.name)}", "1.5", T0)
    tree = build_gpu_server(root)
    found: list[HardwareEntry] = [e for kind in Kind for e in discover(kind, tree.root, node)]
    with sessions() as session:
        agent = session.scalar(select(Agent.id).where(Agent.name == node))
    assert agent is not None
    return FirstInventory(agent, node, {str(e.uuid): e for e in found}, T0)


def rows(sessions: sessionmaker[Session], table: type[object]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(table)) or 0


def test_the_inventories_of_several_agents_are_written_at_once(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    first = inventory(sessions, tmp_path / "a", "node1")
    second = inventory(sessions, tmp_path / "bb", "node2")
    with sessions.begin() as session:
        insert_first_inventories(session, [first, second])

    with sessions() as session:
        for given in (first, second):
            devices = session.scalars(select(Device).where(Device.agent_id == given.agent_id))
            stored = {device.uuid: device for device in devices}
            assert set(stored) == set(given.reported)
            for uuid, entry in given.reported.items():
                device = stored[uuid]
                assert (device.hostname, device.present, device.status) == (
                    given.hostname,
                    True,
                    DeviceStatus.ENABLED,
                )
                assert device.created_at == T0
                plans = plan_deployables(entry, given.hostname)
                assert sorted(d.name for d in device.deployables) == sorted(p.name for p in plans)
                for plan in plans:
                    [deployable] = [d for d in device.deployables if d.name == plan.name]
                    assert deployable.rp_uuid == plan.rp_uuid
                    assert [(a.key, a.value) for a in deployable.attributes] == list(
                        plan.attributes
                    )
                    assert sorted(
                        (h.attach_type, h.attach_info, h.in_use) for h in deployable.attach_handles
                    ) == sorted((kind, info, False) for kind, info in plan.attach_handles)


def test_a_first_inventory_moves_the_inventory_generation_once(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    first = inventory(sessions, tmp_path / "a", "node1")
    with sessions() as session:
        before = read_generation(session)
    with sessions.begin() as session:
        insert_first_inventories(session, [first])
    with sessions() as session:
        assert read_generation(session) == before + 1


def test_agents_that_report_nothing_write_nothing(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    empty = FirstInventory(inventory(sessions, tmp_path / "a", "node1").agent_id, "node1", {}, T0)
    with sessions() as session:
        before = read_generation(session)
    with sessions.begin() as session:
        insert_first_inventories(session, [])
        insert_first_inventories(session, [empty])
    for table in (Device, Deployable, Attribute, AttachHandle):
        assert rows(sessions, table) == 0
    with sessions() as session:
        assert read_generation(session) == before


def test_a_device_without_pci_facts_gets_a_deployable_without_attach_handles(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    node = inventory(sessions, tmp_path / "a", "node1")
    uuid, entry = next(iter(node.reported.items()))
    old = entry.model_copy(update={"pci": None, "virtual_functions": [], "mdev_types": []})
    with sessions.begin() as session:
        insert_first_inventories(session, [FirstInventory(node.agent_id, "node1", {uuid: old}, T0)])
    assert (rows(sessions, Device), rows(sessions, Deployable)) == (1, 1)
    assert (rows(sessions, Attribute), rows(sessions, AttachHandle)) == (1, 0)
