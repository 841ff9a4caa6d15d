"""The conductor's diff: what an agent reports becomes rows, alarms and history."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import mark_silent_agents_down, record_hello
from accel.conductor.device_diff import InventoryDiff
from accel.conductor.reconcile import store_inventory
from accel.db.models import Alarm, AttachHandle, Deployable, Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs, build_from_description
from accel.errors import PeerError
from accel.internal.schemas import DriverOutcome, HardwareEntry, HardwareList, Kind
from accel.states import AlarmKind, AlarmState

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def report(
    tree: FakeSysfs, kinds: tuple[Kind, ...] = tuple(Kind), failed: tuple[Kind, ...] = ()
) -> HardwareList:
    hardware: list[HardwareEntry] = []
    outcomes = []
    for kind in kinds:
        if kind in failed:
            outcomes.append(DriverOutcome(type=kind, endpoint="x:1", state="failed"))
            continue
        hardware.extend(discover(kind, tree.root, "node1"))
        outcomes.append(DriverOutcome(type=kind, endpoint="x:1", state="ok"))
    return HardwareList(hardware=hardware, drivers=outcomes)


def sync(sessions: sessionmaker[Session], found: HardwareList, at: dt.datetime) -> InventoryDiff:
    return store_inventory(sessions, "node1", found, at, at, at + dt.timedelta(minutes=1))


def present(sessions: sessionmaker[Session]) -> dict[str, Device]:
    with sessions() as session:
        return {d.uuid: d for d in session.scalars(select(Device).where(Device.present))}


def active_alarms(sessions: sessionmaker[Session]) -> list[tuple[str, str]]:
    with sessions() as session:
        return [
            (a.kind, a.subject)
            for a in session.scalars(select(Alarm).where(Alarm.state == AlarmState.ACTIVE))
        ]


@pytest.fixture
def registered(sessions: sessionmaker[Session]) -> sessionmaker[Session]:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.1", T0)
    return sessions


def test_first_sync_adds_every_device_with_its_deployables(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    diff = sync(registered, report(gpu_server), T0)
    assert len(diff.added) == 10 and not diff.changed and not diff.vanished
    with registered() as session:
        qat_with_vfs = session.scalar(select(Device).where(Device.pci_address == "0000:6b:00.0"))
        assert qat_with_vfs is not None and qat_with_vfs.hostname == "node1"
        # Each QAT VF is its own deployable, attachable by its own PCI address.
        names = sorted(d.name for d in qat_with_vfs.deployables)
        assert names == [f"node1_0000:6b:00.{n}" for n in range(1, 5)]
        handle = qat_with_vfs.deployables[0].attach_handles[0]
        assert handle.attach_info == (
            '{"bus": "6b", "device": "00", "domain": "0000", "function": "1"}'
        )
        attributes = [(a.key, a.value) for a in qat_with_vfs.deployables[0].attributes]
        assert attributes[:2] == [("rc", "CUSTOM_QAT"), ("trait0", "CUSTOM_QAT_INTEL")]


def test_an_unchanged_report_touches_no_row(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    sync(registered, report(gpu_server), T0)
    diff = sync(registered, report(gpu_server), T0 + dt.timedelta(minutes=1))
    assert diff.unchanged == 10 and not (diff.added or diff.changed or diff.vanished)
    assert all(d.updated_at is None for d in present(registered).values())


def test_a_change_updates_the_device_and_its_deployables(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    sync(registered, report(gpu_server), T0)
    physical = "0000:70:00.0"  # the QAT PF that had no VFs gets two
    gpu_server.add_virtual_functions(
        FakeFunction(physical, 0x8086, 0x4940, 0x0B4000, iommu_group=41),
        0x4941,
        ["0000:70:00.1", "0000:70:00.2"],
    )
    diff = sync(registered, report(gpu_server), T0 + dt.timedelta(minutes=1))
    assert len(diff.changed) == 1 and diff.unchanged == 9
    device = present(registered)[diff.changed[0]]
    assert device.setup_required is False and device.pci_address == physical
    with registered() as session:
        names = session.scalars(
            select(Deployable.name)
            .join(Device)
            .where(Device.uuid == device.uuid)
            .order_by(Deployable.name)
        ).all()
    assert names == ["node1_0000:70:00.1", "node1_0000:70:00.2"]


def test_vanished_hardware_leaves_the_list_raises_an_alarm_and_stays_in_history(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    sync(registered, report(gpu_server), T0)
    gone = next(u for u, d in present(registered).items() if d.pci_address == "0000:b1:00.0")
    gpu_server.remove("0000:b1:00.0")  # the GPU fell off the bus
    diff = sync(registered, report(gpu_server), T0 + dt.timedelta(minutes=1))
    assert diff.vanished == [gone]
    assert gone not in present(registered)
    assert active_alarms(registered) == [(AlarmKind.HARDWARE_VANISHED, gone)]
    with registered() as session:
        kept = session.scalar(select(Device).where(Device.uuid == gone))
        assert kept is not None and kept.vanished_at == T0 + dt.timedelta(minutes=1)
    # A second sync without it raises no second alarm.
    sync(registered, report(gpu_server), T0 + dt.timedelta(minutes=2))
    assert active_alarms(registered) == [(AlarmKind.HARDWARE_VANISHED, gone)]


def test_hardware_that_comes_back_clears_its_alarm(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    full = report(gpu_server)
    sync(registered, full, T0)
    partial = HardwareList(hardware=full.hardware[1:], drivers=full.drivers)
    sync(registered, partial, T0 + dt.timedelta(minutes=1))
    diff = sync(registered, full, T0 + dt.timedelta(minutes=2))
    assert diff.returned == [str(full.hardware[0].uuid)]
    assert active_alarms(registered) == []
    assert len(present(registered)) == 10


def test_a_failed_driver_does_not_make_its_hardware_vanish(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    sync(registered, report(gpu_server), T0)
    diff = sync(registered, report(gpu_server, failed=(Kind.GPU,)), T0 + dt.timedelta(minutes=1))
    assert diff.vanished == [] and len(present(registered)) == 10
    # Nor does a driver that has not registered yet (its kind is simply not vouched for).
    diff = sync(registered, report(gpu_server, kinds=(Kind.QAT,)), T0 + dt.timedelta(minutes=2))
    assert diff.vanished == [] and active_alarms(registered) == []


def test_an_old_agent_without_driver_outcomes_vouches_only_for_kinds_it_shows(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    sync(registered, report(gpu_server), T0)
    gpus = [h for h in report(gpu_server).hardware if h.acc_specs.device_type is Kind.GPU]
    diff = sync(registered, HardwareList(hardware=gpus[:2]), T0 + dt.timedelta(minutes=1))
    assert len(diff.vanished) == 2  # the two other GPUs, nothing of the other kinds
    assert len(present(registered)) == 8


def test_a_report_naming_a_uuid_twice_is_refused_and_stores_nothing(
    registered: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    found = report(gpu_server)
    doubled = HardwareList(hardware=[*found.hardware, found.hardware[0]], drivers=found.drivers)
    with pytest.raises(PeerError):
        sync(registered, doubled, T0)
    with registered() as session:
        assert session.scalar(select(func.count()).select_from(Device)) == 0
        assert session.scalar(select(func.count()).select_from(AttachHandle)) == 0


def test_a_silent_agent_goes_down_once_and_comes_back_with_its_alarm_cleared(
    registered: sessionmaker[Session],
) -> None:
    later = T0 + dt.timedelta(seconds=31)
    assert mark_silent_agents_down(registered, later, down_after=30) == ["node1"]
    assert mark_silent_agents_down(registered, later, down_after=30) == []
    assert active_alarms(registered) == [(AlarmKind.AGENT_DOWN, "node1")]
    outcome = record_hello(registered, "node1", "127.0.0.1:6671", "1.1", later)
    assert outcome.known and outcome.sync_now
    assert active_alarms(registered) == []


def test_a_gpu_with_mdev_types_offers_vgpu_deployables(
    registered: sessionmaker[Session], tmp_path: Path
) -> None:
    tree = build_from_description(
        Path(__file__).parents[1] / "trees" / "mixed-ai.toml", tmp_path / "mixed"
    )
    sync(registered, report(tree, kinds=(Kind.GPU,)), T0)
    with registered() as session:
        a100 = session.scalar(select(Device).where(Device.pci_address == "0000:b3:00.0"))
        assert a100 is not None
        plans = {d.name: d for d in a100.deployables}
        small = plans["node1_0000:b3:00.0_nvidia-471"]
        assert small.num_accelerators == 10 and len(small.attach_handles) == 10
        assert [(a.key, a.value) for a in small.attributes] == [
            ("rc", "VGPU"),
            ("trait0", "CUSTOM_GPU_NVIDIA"),
            ("trait1", "CUSTOM_NVIDIA_20B5_A100D_4C"),
        ]
        handle = small.attach_handles[3]
        assert handle.attach_type == "MDEV"
        assert json.loads(handle.attach_info) == {
            "asked_type": "nvidia-471",
            "bus": "b3",
            "device": "00",
            "domain": "0000",
            "function": "0",
            "vgpu_mark": "nvidia-471_3",
        }
        assert plans["node1_0000:b3:00.0_nvidia-472"].num_accelerators == 5
