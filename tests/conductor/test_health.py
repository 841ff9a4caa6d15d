"""Device health in the conductor: stored, latched, fanned out, alarmed, braked.

The node is the example GPU server as its agent reports it; each test gives some
entries (or VFs) a health as a driver would report it and stores the report, as a
sync does.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.api.devices import health_body
from accel.conductor import health
from accel.conductor.agents import record_hello
from accel.conductor.allocation import apply_changes
from accel.conductor.health_functions import failed_functions
from accel.conductor.reconcile import store_inventory
from accel.db.models import Alarm, Deployable, Device
from accel.driver.discovery import discover
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.health_schemas import (
    MAX_CHECK_NAME_LENGTH,
    MAX_CHECKS_PER_DEVICE,
    MAX_COUNT,
    MAX_VALUE_LENGTH,
    DeviceHealth,
    HealthCheck,
)
from accel.internal.schemas import (
    DriverOutcome,
    GpuFacts,
    HardwareEntry,
    HardwareList,
    Kind,
    MigInstance,
)
from accel.states import (
    AlarmKind,
    AlarmState,
    ArqState,
    CheckSeverity,
    DeviceStatus,
    HealthState,
)
from tests.conductor.test_allocation import QAT_GROUP, binds, request

T0 = dt.datetime(2026, 12, 6, 10, 0, tzinfo=dt.UTC)
GPU = "0000:17:00.0"
OTHER_GPU = "0000:31:00.0"
QAT = "0000:6b:00.0"
QAT_VF = "0000:6b:00.2"


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def check(
    name: str, severity: CheckSeverity, seen: dt.datetime, latch: bool = False
) -> HealthCheck:
    return HealthCheck(
        check=name,
        severity=severity,
        value="1",
        first_seen=T0,
        last_seen=seen,
        count=1,
        latch=latch,
    )


def reading(state: HealthState, *checks: HealthCheck, since: dt.datetime = T0) -> DeviceHealth:
    return DeviceHealth(state=state, since=since, checks=list(checks))


OK = reading(HealthState.OK)
FATAL = reading(HealthState.FAILED, check("aer_fatal", CheckSeverity.FAILED, T0))


def failed_by(name: str, seen: dt.datetime = T0, latch: bool = False) -> DeviceHealth:
    return reading(HealthState.FAILED, check(name, CheckSeverity.FAILED, seen, latch), since=seen)


class Node:
    """The example server's report, with health set per device (and per VF)."""

    def __init__(self, sessions: sessionmaker[Session], tree: FakeSysfs) -> None:
        self.sessions = sessions
        self.entries = [e for kind in Kind for e in discover(kind, tree.root, "node1")]
        self.health: dict[str, DeviceHealth | None] = {}
        self.vf_health: dict[str, DeviceHealth | None] = {}
        self.mig: dict[str, list[MigInstance]] = {}

    def entry(self, entry: HardwareEntry) -> HardwareEntry:
        assert entry.pci is not None
        vfs = [
            vf.model_copy(update={"health": self.vf_health.get(vf.address)})
            for vf in entry.virtual_functions
        ]
        update: dict[str, object] = {
            "health": self.health.get(entry.pci.address),
            "virtual_functions": vfs,
        }
        if entry.pci.address in self.mig:
            update["gpu"] = GpuFacts(mig_mode="enabled", mig_instances=self.mig[entry.pci.address])
        return entry.model_copy(update=update)

    def sync(self, at: dt.datetime, *, leave_out: Iterable[str] = ()) -> None:
        gone = set(leave_out)
        report = HardwareList(
            hardware=[
                self.entry(e)
                for e in self.entries
                if e.pci is not None and e.pci.address not in gone
            ],
            drivers=[DriverOutcome(type=kind, endpoint="x:1", state="ok") for kind in Kind],
        )
        store_inventory(self.sessions, "node1", report, at, at, at + dt.timedelta(minutes=1))

    def device(self, address: str) -> Device:
        with self.sessions() as session:
            found = session.scalar(select(Device).where(Device.pci_address == address))
        assert found is not None
        return found

    def alarms(self, kind: AlarmKind = AlarmKind.HARDWARE_UNHEALTHY) -> list[Alarm]:
        with self.sessions() as session:
            return list(
                session.scalars(
                    select(Alarm)
                    .where(Alarm.kind == kind, Alarm.state == AlarmState.ACTIVE)
                    .order_by(Alarm.id)
                )
            )

    def unfit(self, address: str) -> dict[str, str | None]:
        """Per deployable of the device, why health keeps it out of binds."""
        with self.sessions() as session:
            device = session.scalar(select(Device).where(Device.pci_address == address))
            assert device is not None
            deployables = select(Deployable).where(Deployable.device_id == device.id)
            return {
                d.name: health.why_unhealthy(device, d.name) for d in session.scalars(deployables)
            }

    def clear(self, address: str, at: dt.datetime) -> None:
        with self.sessions.begin() as session:
            assert health.clear_health(session, self.device(address).uuid, at) is not None


@pytest.fixture
def node(sessions: sessionmaker[Session], gpu_server: FakeSysfs) -> Node:
    record_hello(sessions, "node1", "127.0.0.1:6671", "1.6", T0)
    node = Node(sessions, gpu_server)
    node.sync(T0)
    return node


def test_health_is_stored_and_kept_apart_from_the_operators_status(node: Node) -> None:
    assert node.device(GPU).health_state is None  # never reported: shown as unknown
    node.health[GPU] = reading(
        HealthState.DEGRADED, check("link_width", CheckSeverity.DEGRADED, minutes(1))
    )
    node.sync(minutes(1))
    with node.sessions.begin() as session:
        session.execute(
            update(Device).where(Device.pci_address == GPU).values(status=DeviceStatus.MAINTAINING)
        )
    node.health[GPU] = FATAL
    node.sync(minutes(2))
    device = node.device(GPU)
    assert (device.status, device.health_state) == (DeviceStatus.MAINTAINING, HealthState.FAILED)
    assert [c["check"] for c in json.loads(device.health_checks or "")] == ["aer_fatal"]
    # A report that changes nothing, the device vanishing and coming back: all kept.
    node.sync(minutes(3))
    node.sync(minutes(4), leave_out=[GPU])
    assert not node.device(GPU).present
    node.sync(minutes(5))
    device = node.device(GPU)
    assert device.present and device.status == DeviceStatus.MAINTAINING
    assert device.health_state == HealthState.FAILED


def test_degraded_is_handed_out_and_failed_is_not(node: Node) -> None:
    node.health[GPU] = reading(
        HealthState.DEGRADED, check("link_speed", CheckSeverity.DEGRADED, T0)
    )
    node.health[OTHER_GPU] = FATAL
    node.sync(minutes(1))
    assert set(node.unfit(GPU).values()) == {None}
    [reason] = node.unfit(OTHER_GPU).values()
    assert reason is not None and "is failed (aer_fatal)" in reason
    assert [a.subject for a in node.alarms()] == [node.device(OTHER_GPU).uuid]


def test_a_latching_check_holds_the_device_failed_until_cleared(node: Node) -> None:
    node.health[GPU] = failed_by("flapping", minutes(1), latch=True)
    node.sync(minutes(1))
    node.health[GPU] = OK  # the driver sees it well again: the latch holds
    node.sync(minutes(2))
    device = node.device(GPU)
    assert (device.health_state, device.health_latched_by) == (HealthState.FAILED, "flapping")
    assert device.health_latched_at == minutes(1)
    assert len(node.alarms()) == 1
    node.clear(GPU, minutes(3))
    device = node.device(GPU)
    assert (device.health_state, device.health_latched_at) == (HealthState.OK, None)
    assert device.health_cleared_at == minutes(3)
    assert node.alarms() == []


def test_a_latch_seen_again_after_the_clear_latches_again(node: Node) -> None:
    node.health[GPU] = failed_by("flapping", minutes(1), latch=True)
    node.sync(minutes(1))
    node.clear(GPU, minutes(2))
    # The latch let go; the driver's own last reading still says failed.
    device = node.device(GPU)
    assert (device.health_state, device.health_latched_at) == (HealthState.FAILED, None)
    node.health[GPU] = reading(
        HealthState.OK, check("flapping", CheckSeverity.OK, minutes(1), latch=True)
    )
    node.sync(minutes(3))
    assert node.device(GPU).health_state == HealthState.OK
    node.health[GPU] = failed_by("flapping", minutes(4), latch=True)
    node.sync(minutes(4))
    device = node.device(GPU)
    assert (device.health_state, device.health_latched_at) == (HealthState.FAILED, minutes(4))


def test_a_latch_the_driver_dates_in_the_far_future_is_cleared_for_good(node: Node) -> None:
    """A node whose clock runs far ahead: its latch is after every clear by that clock.
    Cleared, it stays cleared while the driver repeats it; new evidence latches again."""
    far = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
    node.health[GPU] = reading(HealthState.OK, check("flapping", CheckSeverity.OK, far, True))
    node.vf_health[QAT_VF] = reading(HealthState.OK, check("flapping", CheckSeverity.OK, far, True))
    node.sync(minutes(1))
    assert node.device(GPU).health_latched_by == "flapping"
    assert health.failure_reason(node.device(QAT)) == f"vf:{QAT_VF}:latched:flapping"
    node.clear(GPU, minutes(2))
    node.clear(QAT, minutes(2))
    for at in (3, 4):
        node.sync(minutes(at))
        assert node.device(GPU).health_state == HealthState.OK
        assert health.failure_reason(node.device(QAT)) == ""
    assert node.alarms() == []
    sooner = far - dt.timedelta(days=1)  # a new flap, by the same clock
    node.health[GPU] = reading(HealthState.OK, check("flapping", CheckSeverity.OK, sooner, True))
    node.sync(minutes(5))
    assert node.device(GPU).health_latched_at == minutes(5)


def test_a_failed_pf_fails_every_vf_and_a_failed_vf_only_itself(node: Node) -> None:
    node.vf_health[QAT_VF] = failed_by("aer_fatal")
    node.sync(minutes(1))
    device = node.device(QAT)
    assert device.health_state is None  # the PF keeps its own health
    unfit = node.unfit(QAT)
    assert [name for name, why in unfit.items() if why] == [f"node1_{QAT_VF}"]
    assert health.failure_reason(device) == f"vf:{QAT_VF}"
    [alarm] = node.alarms()
    assert alarm.subject == device.uuid
    node.health[QAT] = FATAL
    node.sync(minutes(2))
    assert len(node.unfit(QAT)) == 4 and all(node.unfit(QAT).values())
    assert len(node.alarms()) == 1  # still the one alarm
    node.health[QAT] = OK
    node.vf_health[QAT_VF] = OK
    node.sync(minutes(3))
    assert not any(node.unfit(QAT).values()) and node.alarms() == []


def test_a_vf_whose_checks_flap_is_latched_alone_until_its_device_is_cleared(
    node: Node,
) -> None:
    node.vf_health[QAT_VF] = failed_by("flapping", minutes(1), latch=True)
    node.sync(minutes(1))
    # The VF's driver sees it well again, still naming the flap it latched on.
    node.vf_health[QAT_VF] = reading(
        HealthState.OK, check("flapping", CheckSeverity.OK, minutes(1), latch=True)
    )
    node.sync(minutes(2))
    device = node.device(QAT)
    assert device.health_state is None and device.health_latched_at is None  # not the PF
    assert [name for name, why in node.unfit(QAT).items() if why] == [f"node1_{QAT_VF}"]
    assert health.failure_reason(device) == f"vf:{QAT_VF}:latched:flapping"
    [alarm] = node.alarms()
    assert alarm.subject == device.uuid
    # A restarted conductor reads the latch back from the row: a report without the
    # latching check (the driver restarted too) keeps the VF failed.
    node.vf_health[QAT_VF] = OK
    node.sync(minutes(3))
    assert node.unfit(QAT)[f"node1_{QAT_VF}"] is not None
    node.clear(QAT, minutes(4))
    assert not any(node.unfit(QAT).values()) and node.alarms() == []
    # The same flap, seen before the clear, does not latch again; a new one does.
    node.vf_health[QAT_VF] = reading(
        HealthState.OK, check("flapping", CheckSeverity.OK, minutes(1), latch=True)
    )
    node.sync(minutes(5))
    assert not any(node.unfit(QAT).values())
    node.vf_health[QAT_VF] = reading(
        HealthState.OK, check("flapping", CheckSeverity.OK, minutes(6), latch=True)
    )
    node.sync(minutes(6))
    assert health.failure_reason(node.device(QAT)) == f"vf:{QAT_VF}:latched:flapping"
    assert node.device(QAT).health_state is None


def test_a_mig_instance_failed_on_its_own_evidence_is_named_and_its_gpu_kept(
    node: Node,
) -> None:
    well, broken = "MIG-1111", "MIG-2222"
    node.mig[GPU] = [
        MigInstance(uuid=well, health=OK),
        MigInstance(uuid=broken, health=failed_by("gpu_xid")),
    ]
    node.sync(minutes(1))
    device = node.device(GPU)
    assert device.health_state is None  # the GPU keeps its own health
    assert health.failure_reason(device) == f"mig:{broken}"
    assert [a.subject for a in node.alarms()] == [device.uuid]
    assert set(node.unfit(GPU).values()) == {None}  # MIG instances are not deployables
    # The GPU failing takes every instance with it: only the GPU is named.
    node.health[GPU] = FATAL
    node.mig[GPU] = [MigInstance(uuid=u, health=failed_by("aer_fatal")) for u in (well, broken)]
    node.sync(minutes(2))
    assert health.failure_reason(node.device(GPU)) == "aer_fatal"
    assert len(node.alarms()) == 1
    node.health[GPU] = OK
    node.mig[GPU] = [MigInstance(uuid=u, health=OK) for u in (well, broken)]
    node.sync(minutes(3))
    assert health.failure_reason(node.device(GPU)) == "" and node.alarms() == []


def test_a_row_written_before_vf_latches_is_read_as_failed_vfs_without_latch() -> None:
    assert failed_functions(json.dumps([QAT_VF])) == {QAT_VF: None}
    assert failed_functions(None) == {}


def test_the_brake_keeps_a_mass_failure_in_service_until_confirmed(node: Node) -> None:
    # Four of ten devices fail: more than 10% but fewer than the brake's floor.
    failing = [e.pci.address for e in node.entries if e.pci is not None][:6]
    for address in failing[:4]:
        node.health[address] = FATAL
    node.sync(minutes(1))
    assert node.alarms(AlarmKind.HEALTH_BRAKE) == []
    assert all(health.is_failed(node.device(a)) for a in failing[:4])
    # A fifth and sixth within the window: the brake trips and holds them in service.
    for address in failing[4:]:
        node.health[address] = FATAL
    node.sync(minutes(2))
    [brake] = node.alarms(AlarmKind.HEALTH_BRAKE)
    assert brake.subject == "fleet" and "6 of the fleet's 10 devices" in brake.message
    held = [node.device(a) for a in failing[4:]]
    assert all(d.health_state == HealthState.FAILED and not health.is_failed(d) for d in held)
    assert not any(node.unfit(failing[4]).values())
    assert "kept in service by the fleet health brake" in node.alarms()[-1].message
    # Another report of a held device, still failed: it stays held.
    node.health[failing[4]] = failed_by("aer_nonfatal", minutes(2))
    node.sync(minutes(2.5))
    assert not health.is_failed(node.device(failing[4]))
    with node.sessions.begin() as session:
        assert health.confirm_failures(session, minutes(3)) == 2
    assert node.alarms(AlarmKind.HEALTH_BRAKE) == []
    assert all(health.is_failed(node.device(a)) for a in failing)
    # Failures counted before the confirmation do not trip it again.
    node.health[failing[5]] = OK
    node.sync(minutes(4))
    node.health[failing[5]] = FATAL
    node.sync(minutes(5))
    assert node.alarms(AlarmKind.HEALTH_BRAKE) == []
    assert health.is_failed(node.device(failing[5]))


def test_a_device_failed_long_ago_does_not_count_for_the_brake(node: Node) -> None:
    addresses = [e.pci.address for e in node.entries if e.pci is not None]
    for address in addresses[:4]:
        node.health[address] = FATAL
    node.sync(minutes(1))
    node.health[addresses[4]] = FATAL
    node.sync(minutes(30))  # past the default window of ten minutes
    assert node.alarms(AlarmKind.HEALTH_BRAKE) == []


def test_a_bind_never_picks_a_failed_device_and_its_alarm_names_the_bound(node: Node) -> None:
    holder = request(node.sessions, QAT_GROUP)
    [outcome] = apply_changes(node.sessions, binds(rp("node1_0000:6b:00.1"), holder), T0)
    assert outcome.state == ArqState.BOUND
    node.health[QAT] = FATAL
    node.sync(minutes(1))
    [alarm] = node.alarms()
    assert f"accelerator requests bound to it: {holder}" in alarm.message
    late = request(node.sessions, QAT_GROUP)
    [outcome] = apply_changes(node.sessions, binds(rp(f"node1_{QAT_VF}"), late), T0)
    assert outcome.state == ArqState.BIND_FAILED
    assert f"device {node.device(QAT).uuid} is failed (aer_fatal)" == outcome.reason


def test_two_conductors_storing_one_failure_raise_one_alarm(node: Node) -> None:
    node.health[GPU] = FATAL
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda at: node.sync(at), [minutes(1), minutes(1)]))
    assert len(node.alarms()) == 1


def rp(name: str) -> str:
    return str(uuid.uuid3(uuid.NAMESPACE_DNS, name))


FAR_PAST = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
FAR_FUTURE = dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)


def at_every_bound() -> DeviceHealth:
    """As much health as one device may report: every check at its longest, counts
    at their largest, times at both ends of what UTC writes, names accel never made."""
    return DeviceHealth(
        state=HealthState.FAILED,
        since=FAR_PAST,
        checks=[
            HealthCheck(
                check=f"vendor_check_{index:02d}".ljust(MAX_CHECK_NAME_LENGTH, "x"),
                severity=CheckSeverity.FAILED if index % 2 else CheckSeverity.DEGRADED,
                value="é" * MAX_VALUE_LENGTH,
                first_seen=FAR_PAST,
                last_seen=FAR_FUTURE,
                count=MAX_COUNT,
            )
            for index in range(MAX_CHECKS_PER_DEVICE)
        ],
    )


def test_health_at_every_bound_is_stored_and_shown_intact(node: Node) -> None:
    reported = at_every_bound()
    node.health[GPU] = reported
    node.sync(minutes(1))
    device = node.device(GPU)
    shown = health_body(device)
    assert shown["checks"] == [c.model_dump(mode="json") for c in reported.checks]
    assert (shown["state"], shown["since"]) == ("failed", "0001-01-01T00:00:00+00:00")
    assert shown["checks"][0]["last_seen"] == "9999-12-31T23:59:59Z"
    assert shown["checks"][0]["count"] == MAX_COUNT
    assert len(shown["reason"].split(",")) == MAX_CHECKS_PER_DEVICE // 2
    [alarm] = node.alarms()
    assert alarm.subject == device.uuid
