"""The health monitor over discoveries: new devices and VFs are read at once, vanished
ones are forgotten (a device that comes back starts from a fresh baseline)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from accel.driver.discovery import Discoverer
from accel.driver.fake_health import healthy, set_aer
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.driver.health.gpu import HealthNvml
from accel.driver.health.monitor import HealthMonitor
from accel.driver.pci_ids import PciIdDatabase
from accel.internal.health_schemas import DeviceHealth
from accel.internal.schemas import HardwareEntry, Kind
from tests.driver.health_fakes import HealthNvmlFake

GPU = "0000:17:00.0"
NIC_PF = "0000:98:00.1"  # the gpu_server's second E810 port: SR-IOV capable, no VFs yet


class Ticks:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 6, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=5)
        return self.now


def discover(tree: FakeSysfs, kind: Kind) -> list[HardwareEntry]:
    return Discoverer(kind, tree.root, names=PciIdDatabase.empty()).discover("node1")


def test_vfs_enabled_later_get_health_in_the_same_discovery(gpu_server: FakeSysfs) -> None:
    monitor = HealthMonitor(Kind.NIC, gpu_server.root, clock=Ticks())
    first = {e.pci.address: e for e in monitor.attach(discover(gpu_server, Kind.NIC)) if e.pci}
    assert first[NIC_PF].health is not None and not first[NIC_PF].virtual_functions
    pf = FakeFunction(NIC_PF, 0x8086, 0x1592, 0x020000, driver="ice", sriov_total_vfs=128)
    gpu_server.add_virtual_functions(pf, 0x1889, ["0000:98:11.0", "0000:98:11.1"], "iavf")
    for address in ("0000:98:11.0", "0000:98:11.1"):
        healthy(gpu_server, address, 0x8086, link=False)
    again = {e.pci.address: e for e in monitor.attach(discover(gpu_server, Kind.NIC)) if e.pci}
    vfs = again[NIC_PF].virtual_functions
    assert len(vfs) == 2
    assert all(vf.health is not None and vf.health.state == "ok" for vf in vfs)


def test_a_device_that_vanished_and_came_back_starts_from_a_fresh_baseline(
    gpu_server: FakeSysfs,
) -> None:
    nvml = HealthNvmlFake(GPU)
    monitor = HealthMonitor(Kind.GPU, gpu_server.root, nvml=cast(HealthNvml, nvml), clock=Ticks())
    healthy(gpu_server, GPU, 0x10DE)
    monitor.attach(discover(gpu_server, Kind.GPU))
    monitor.poll(discover(gpu_server, Kind.GPU))
    gpu_server.remove(GPU)
    monitor.poll(discover(gpu_server, Kind.GPU))
    assert GPU not in monitor.machines and nvml.freed == 1
    gpu_server.add(FakeFunction(GPU, 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    healthy(gpu_server, GPU, 0x10DE)
    set_aer(gpu_server, GPU, "fatal", {"Poisoned TLP": 3})  # counted before it left
    back = {e.pci.address: e for e in monitor.attach(discover(gpu_server, Kind.GPU)) if e.pci}
    health = back[GPU].health
    assert health is not None and health.state == "ok"


def test_a_single_fatal_error_is_still_reported_failed_after_a_few_clean_fast_polls(
    gpu_server: FakeSysfs,
) -> None:
    """The integration test's case, with its poll every 0.1 s and the clock driven
    here: one fatal AER bump just after discovery. The report must still say failed
    after the polls that follow, until the hold ends: the conductor learns of it only
    at the next heartbeat and sync, and would otherwise store the recovered report
    alone, without an alarm."""
    qat = "0000:6b:00.0"
    clock = FastTicks(0.1)
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=clock)
    healthy(gpu_server, qat, 0x8086)
    entries = discover(gpu_server, Kind.QAT)
    monitor.attach(entries)  # the baseline, at discovery
    set_aer(gpu_server, qat, "fatal", {"Poisoned TLP": 1})
    states = []
    for _ in range(1 + monitor.policy.recover_polls * 10):
        monitor.poll(entries)
        states.append(report(monitor, entries, qat).state)
    assert set(states) == {"failed"}
    clock.now += timedelta(seconds=monitor.policy.failed_hold)
    monitor.poll(entries)
    health = report(monitor, entries, qat)
    assert health.state == "ok" and health.checks[0].count == 1  # and it is remembered


class FastTicks(Ticks):
    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=self.step)
        return self.now


def report(monitor: HealthMonitor, entries: list[HardwareEntry], address: str) -> DeviceHealth:
    [entry] = [e for e in monitor.attach(entries) if e.pci and e.pci.address == address]
    assert entry.health is not None
    return entry.health
