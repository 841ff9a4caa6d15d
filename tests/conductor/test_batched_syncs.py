"""Syncs stored many agents to a transaction: the same rows as one by one, and each
sync's failure its own."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import device_diff
from accel.conductor.agents import Hello, record_hello, record_hellos
from accel.conductor.device_diff import InventoryDiff
from accel.conductor.first_inventory import FirstInventory, insert_first_inventories
from accel.conductor.leases import LeaseLost
from accel.conductor.reconcile import FinishedSync, store_inventories
from accel.db.engine import make_engine, migrate, session_factory
from accel.db.generation import read_generation
from accel.db.models import Agent, Alarm, AttachHandle, Attribute, Deployable, Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import build_gpu_server
from accel.errors import PeerError
from accel.internal.schemas import DriverOutcome, HardwareEntry, HardwareList, Kind
from accel.states import AgentState, AlarmKind

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
LATER = T0 + dt.timedelta(minutes=1)
LATER_STEP = dt.timedelta(minutes=1)


def node_report(root: Path, node: str) -> HardwareList:
    tree = build_gpu_server(root)
    hardware: list[HardwareEntry] = []
    for kind in Kind:
        hardware.extend(discover(kind, tree.root, node))
    outcomes = [DriverOutcome(type=kind, endpoint="x:1", state="ok") for kind in Kind]
    return HardwareList(hardware=hardware, drivers=outcomes)


def finished(node: str, report: HardwareList, owner: str | None = None) -> FinishedSync:
    return FinishedSync(node, report, T0, T0, LATER, owner)


def snapshot(sessions: sessionmaker[Session]) -> dict[str, Any]:
    """Every device as rows, without the ids and generated uuids two databases differ in."""
    with sessions() as session:
        devices = {}
        for device in session.scalars(select(Device).order_by(Device.uuid)):
            deployables = []
            for deployable in sorted(device.deployables, key=lambda d: d.name):
                deployables.append(
                    (
                        deployable.name,
                        deployable.num_accelerators,
                        deployable.rp_uuid,
                        deployable.driver_name,
                        deployable.created_at,
                        [(a.key, a.value) for a in deployable.attributes],
                        [
                            (h.attach_type, h.attach_info, h.in_use)
                            for h in deployable.attach_handles
                        ],
                    )
                )
            columns = {
                column.name: getattr(device, column.name)
                for column in Device.__table__.columns
                if column.name not in ("id", "agent_id")
            }
            devices[device.uuid] = (columns, deployables)
        return devices


def test_first_inventories_in_bulk_are_the_rows_the_object_path_writes(
    sessions: sessionmaker[Session], sqlite_url: str, tmp_path: Path
) -> None:
    reports = {node: node_report(tmp_path / node, node) for node in ("node1", "node2")}
    for node in reports:
        record_hello(sessions, node, f"127.0.0.1:{6671 + len(node)}", "1.3", T0)
    outcomes = store_inventories(sessions, [finished(node, r) for node, r in reports.items()])
    assert [len(o.added) for o in outcomes if isinstance(o, InventoryDiff)] == [10, 10]

    # The same reports through the object path, into a database of their own.
    other_engine = make_engine(sqlite_url.replace("accel.db", "objects.db"))
    migrate(other_engine)
    other = session_factory(other_engine)
    try:
        with other.begin() as session:
            for node, report in reports.items():
                agent = Agent(name=node, endpoint="x:1", state=AgentState.UP, last_seen=T0)
                session.add(agent)
                session.flush()
                reported = {str(entry.uuid): entry for entry in report.hardware}
                device_diff.apply_report(session, agent, {}, {}, reported, T0, set())
        bulk, objects = snapshot(sessions), snapshot(other)
    finally:
        other_engine.dispose()
    assert len(bulk) == 20
    assert bulk == objects
    with sessions() as session:
        assert session.scalar(select(Attribute).limit(1)) is not None
        assert session.scalar(select(AttachHandle).limit(1)) is not None


def test_one_sync_failing_in_a_batch_leaves_the_others_written(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    for node in ("node1", "node2", "node3"):
        record_hello(sessions, node, f"127.0.0.1:{6671 + len(node)}", "1.3", T0)
    with sessions.begin() as session:  # node2's sync lease is another conductor's
        for agent in session.scalars(select(Agent)):
            agent.sync_owner = "elsewhere" if agent.name == "node2" else "here"
    outcomes = store_inventories(
        sessions,
        [
            finished("node1", node_report(tmp_path / "1", "node1"), "here"),
            finished("node2", node_report(tmp_path / "2", "node2"), "here"),
            finished("ghost", node_report(tmp_path / "g", "ghost"), "here"),
            finished("node3", node_report(tmp_path / "3", "node3"), "here"),
        ],
    )
    assert isinstance(outcomes[1], LeaseLost)
    assert isinstance(outcomes[2], PeerError)
    assert [len(o.added) for o in (outcomes[0], outcomes[3]) if isinstance(o, InventoryDiff)] == [
        10,
        10,
    ]
    with sessions() as session:
        hosts = sorted(set(session.scalars(select(Device.hostname))))
        owners = dict(session.execute(select(Agent.name, Agent.sync_owner)).all())
    assert hosts == ["node1", "node3"]
    # Written syncs gave their leases back; the lost one is still its holder's.
    assert owners == {"node1": None, "node2": "elsewhere", "node3": None}


def test_a_uuid_another_node_holds_is_not_taken_over_in_a_batch(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    reports = {node: node_report(tmp_path / node, node) for node in ("node1", "node2")}
    for index, node in enumerate(reports):
        record_hello(sessions, node, f"127.0.0.1:{6671 + index}", "1.3", T0)
    store_inventories(sessions, [finished(node, report) for node, report in reports.items()])
    # node1's GPU trains down (its row is rewritten), and node2 reports that GPU's
    # uuid as its own in the same batch.
    first, second = reports["node1"], reports["node2"]
    gpu = next(e for e in first.hardware if e.acc_specs.device_type is Kind.GPU)
    assert gpu.pci is not None
    slower = gpu.model_copy(update={"pci": gpu.pci.model_copy(update={"current_link_width": "8"})})
    mine = HardwareList(
        hardware=[slower if e is gpu else e for e in first.hardware], drivers=first.drivers
    )
    # (At an address of its own: one naming a function twice is refused whole.)
    copied = gpu.model_copy(update={"pci": gpu.pci.model_copy(update={"address": "0000:e1:00.0"})})
    theirs = HardwareList(hardware=[*second.hardware, copied], drivers=second.drivers)
    # node2's claim on it is refused, with an alarm; the rest of the batch is stored ...
    outcomes = store_inventories(sessions, [finished("node1", mine), finished("node2", theirs)])
    assert not any(isinstance(outcome, Exception) for outcome in outcomes)
    # ... and the GPU stays node1's, as stored before.
    with sessions() as session:
        host = session.scalar(select(Device.hostname).where(Device.uuid == str(gpu.uuid)))
        clash = session.scalar(
            select(Alarm.subject).where(Alarm.kind == AlarmKind.HARDWARE_UUID_CLASH)
        )
    assert host == "node1" and clash == str(gpu.uuid)


def test_a_first_inventory_naming_a_stored_uuid_fails_as_an_integrity_error(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # On PostgreSQL a first inventory goes by COPY, around SQLAlchemy: its error is
    # still SQLAlchemy's, as the writer and the sync loop tell errors apart by class.
    for index, node in enumerate(("node1", "node2")):
        record_hello(sessions, node, f"127.0.0.1:{6671 + index}", "1.3", T0)
    first = node_report(tmp_path / "1", "node1")
    store_inventories(sessions, [finished("node1", first)])
    # A clash is refused before it reaches the database (see uuid_clash); the bulk
    # insert itself is what is tested here.
    entry = first.hardware[0]
    with pytest.raises(IntegrityError), sessions.begin() as session:
        node2 = session.scalar(select(Agent.id).where(Agent.name == "node2"))
        assert node2 is not None
        inventory = FirstInventory(node2, "node2", {str(entry.uuid): entry}, T0)
        insert_first_inventories(session, [inventory])
    with sessions() as session:
        assert set(session.scalars(select(Device.hostname))) == {"node1"}


def test_a_second_sync_of_one_agent_in_a_batch_sees_the_first(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.3", T0)
    full = node_report(tmp_path / "n", "node1")
    fewer = HardwareList(hardware=full.hardware[:-1], drivers=full.drivers)
    first, second, third = store_inventories(
        sessions, [finished("node1", full), finished("node1", fewer), finished("node1", full)]
    )
    assert isinstance(first, InventoryDiff) and len(first.added) == 10
    assert isinstance(second, InventoryDiff) and len(second.vanished) == 1
    assert isinstance(third, InventoryDiff) and len(third.returned) == 1
    with sessions() as session:
        assert session.scalar(select(Deployable).limit(1)) is not None


def test_hellos_in_one_batch_register_each_agent_once(
    sessions: sessionmaker[Session],
) -> None:
    outcomes = record_hellos(
        sessions,
        [
            Hello("node1", "127.0.0.1:1", "1.3", T0),
            Hello("node2", "127.0.0.1:2", "1.3", T0),
            Hello("node1", "127.0.0.1:1", "1.3", LATER),
            Hello("node3", "127.0.0.1:3", "1.3", T0),
        ],
        max_agents=2,
    )
    known = [getattr(outcome, "known", None) for outcome in outcomes]
    assert known == [False, False, True, None]  # node3: past --max-agents
    with sessions() as session:
        rows = dict(session.execute(select(Agent.name, Agent.last_seen)).all())
    assert rows == {"node1": LATER, "node2": T0}


def test_a_304_changes_nothing_while_the_stored_etag_is_the_one_sent(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.4", T0)
    report = node_report(tmp_path / "n", "node1")
    full = FinishedSync("node1", report, T0, T0, LATER, etag='"a"')
    [added] = store_inventories(sessions, [full])
    assert isinstance(added, InventoryDiff) and len(added.added) == 10

    unchanged = FinishedSync("node1", None, LATER, LATER, LATER + LATER_STEP, etag='"a"')
    (diff,) = store_inventories(sessions, [unchanged])
    assert diff == InventoryDiff(unchanged=10)
    with sessions() as session:
        agent = session.scalars(select(Agent)).one()
        assert (agent.inventory_etag, agent.next_sync_at) == ('"a"', LATER + LATER_STEP)

    # Another conductor stored a newer report meanwhile: a 304 for the old ETag
    # proves nothing, so the agent is synced again at once, in full.
    stale = FinishedSync("node1", None, LATER, LATER, LATER + LATER_STEP, etag='"old"')
    assert store_inventories(sessions, [stale]) == [InventoryDiff()]
    with sessions() as session:
        agent = session.scalars(select(Agent)).one()
        assert (agent.inventory_etag, agent.next_sync_at) == (None, LATER)


def test_a_partial_report_is_never_matched_by_etag(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.4", T0)
    report = node_report(tmp_path / "n", "node1")
    assert report.drivers is not None
    failed = DriverOutcome(type=Kind.GPU, endpoint="x:1", state="failed")
    partial = HardwareList(
        hardware=[h for h in report.hardware if h.acc_specs.device_type != Kind.GPU],
        drivers=[failed, *(d for d in report.drivers if d.type != Kind.GPU)],
    )
    store_inventories(sessions, [FinishedSync("node1", partial, T0, T0, LATER, etag='"p"')])
    with sessions() as session:
        assert session.scalars(select(Agent.inventory_etag)).one() is None


def test_changed_syncs_load_only_the_rewritten_devices_graph_in_one_query(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    nodes = ("node1", "node2", "node3")
    reports = {node: node_report(tmp_path / node, node) for node in nodes}
    for index, node in enumerate(nodes):
        record_hello(sessions, node, f"127.0.0.1:{6671 + index}", "1.3", T0)
    store_inventories(sessions, [finished(node, reports[node]) for node in nodes])

    # On each node one GPU trained down to x8; its nine other devices are as they were.
    changed = {}
    for node, found in reports.items():
        gpu = next(e for e in found.hardware if e.acc_specs.device_type is Kind.GPU)
        assert gpu.pci is not None
        slower = gpu.model_copy(
            update={"pci": gpu.pci.model_copy(update={"current_link_width": "8"})}
        )
        changed[node] = found.model_copy(
            update={"hardware": [slower if e is gpu else e for e in found.hardware]}
        )
    statements: list[tuple[str, Any]] = []
    engine = sessions.kw["bind"]
    listener = lambda *args, **kwargs: statements.append((args[2], args[3]))  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        outcomes = store_inventories(
            sessions,
            [FinishedSync(n, changed[n], LATER, LATER, LATER + LATER_STEP) for n in nodes],
        )
    finally:
        event.remove(engine, "before_cursor_execute", listener)

    assert [len(o.changed) for o in outcomes if isinstance(o, InventoryDiff)] == [1, 1, 1]
    reads = [(s, p) for s, p in statements if s.lstrip().upper().startswith("SELECT")]
    # One query joins the devices to their deployables, attributes and handles...
    [(graph, parameters)] = [(s, p) for s, p in reads if "deployables" in s]
    assert "JOIN attributes" in graph and "JOIN attach_handles" in graph
    # ... for the three changed GPUs (their uuids), not for all thirty devices.
    values = parameters.values() if isinstance(parameters, dict) else parameters
    rewritten = [str(gpu.uuid) for gpu in at_link_width(changed, "8")]
    assert sorted(values) == sorted(rewritten)
    # Each node's rows are those of the sync stored one by one.
    with sessions() as session:
        widths = sorted(session.scalars(select(Device.hardware).where(Device.type == "GPU")))
    assert sum('"current_link_width":"8"' in w.replace(" ", "") for w in widths) == 3


def at_link_width(reports: dict[str, HardwareList], width: str) -> list[HardwareEntry]:
    return [
        entry
        for report in reports.values()
        for entry in report.hardware
        if entry.pci is not None and entry.pci.current_link_width == width
    ]


def test_a_first_inventory_moves_the_inventory_generation(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    # On PostgreSQL a first inventory is written by COPY, which SQLAlchemy's statement
    # events do not see: the api's cached lists must still learn of it.
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.5", T0)
    with sessions() as session:
        before = read_generation(session)
    (diff,) = store_inventories(sessions, [finished("node1", node_report(tmp_path, "node1"))])
    assert isinstance(diff, InventoryDiff) and len(diff.added) == 10
    with sessions() as session:
        assert read_generation(session) == before + 1
