"""The health monitor over discoveries: new devices and VFs are read at once, vanished
ones are forgotten (a device that comes back starts from a fresh baseline)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from accel.driver.discovery import Discoverer
from accel.driver.fake_health import healthy, set_aer, set_qat_heartbeat, set_qat_ras, set_qat_state
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.driver.health.evidence import Absent
from accel.driver.health.gpu import HealthNvml
from accel.driver.health.monitor import VF_EVERY, HealthMonitor
from accel.driver.health.policy import HealthPolicy
from accel.driver.pci_ids import PciIdDatabase
from accel.internal.health_schemas import DeviceHealth
from accel.internal.schemas import GpuFacts, HardwareEntry, Kind, MigInstance
from tests.driver.health_fakes import HealthNvmlFake
from tests.driver.poll_clock import Ticks

GPU = "0000:17:00.0"
NIC_PF = "0000:98:00.1"  # the gpu_server's second E810 port: SR-IOV capable, no VFs yet


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
    clock = Ticks(0.1)
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


def report(monitor: HealthMonitor, entries: list[HardwareEntry], address: str) -> DeviceHealth:
    [entry] = [e for e in monitor.attach(entries) if e.pci and e.pci.address == address]
    assert entry.health is not None
    return entry.health


def test_a_mig_instance_fails_on_an_xid_scoped_to_it_and_with_its_gpu(
    gpu_server: FakeSysfs,
) -> None:
    nvml = HealthNvmlFake(GPU, mig={1: "MIG-a", 2: "MIG-b"})
    monitor = HealthMonitor(Kind.GPU, gpu_server.root, nvml=cast(HealthNvml, nvml), clock=Ticks())
    healthy(gpu_server, GPU, 0x10DE)
    instances = [MigInstance(uuid="MIG-a"), MigInstance(uuid="MIG-b")]
    entries = [
        e.model_copy(update={"gpu": GpuFacts(mig_mode="enabled", mig_instances=instances)})
        if e.pci and e.pci.address == GPU
        else e
        for e in discover(gpu_server, Kind.GPU)
    ]
    assert mig_states(monitor, entries) == ("ok", {"MIG-a": "ok", "MIG-b": "ok"})
    nvml.xids = [(79, 2)]  # NVML scopes it to GPU instance 2: MIG-b alone
    assert monitor.poll(entries)
    assert mig_states(monitor, entries) == ("ok", {"MIG-a": "ok", "MIG-b": "failed"})
    nvml.xids = [79]  # the whole GPU: every instance with it, naming the GPU's check
    monitor.poll(entries)
    assert mig_states(monitor, entries) == ("failed", {"MIG-a": "failed", "MIG-b": "failed"})
    [gpu] = [e for e in monitor.attach(entries) if e.pci and e.pci.address == GPU]
    assert gpu.gpu is not None and gpu.gpu.mig_instances[0].health is not None
    assert [c.check for c in gpu.gpu.mig_instances[0].health.checks] == ["gpu_xid"]
    nvml.mig = {1: "MIG-a"}  # MIG-b destroyed: its evidence is forgotten
    monitor.poll(entries)
    assert (GPU, "MIG-b") not in monitor.instances and (GPU, "MIG-a") in monitor.instances
    nvml.mig = {}  # MIG turned off: nothing kept of its instances
    monitor.poll(entries)
    assert monitor.instances == {}


def mig_states(monitor: HealthMonitor, entries: list[HardwareEntry]) -> tuple[str, dict[str, str]]:
    [gpu] = [e for e in monitor.attach(entries) if e.pci and e.pci.address == GPU]
    assert gpu.health is not None and gpu.gpu is not None
    return gpu.health.state, {
        str(i.uuid): i.health.state for i in gpu.gpu.mig_instances if i.health is not None
    }


def vf_turn(monitor: HealthMonitor, entries: list[HardwareEntry]) -> None:
    """Polls until the next poll that reads the VFs too (their PF is read at each)."""
    monitor.poll(entries)
    for _ in range(VF_EVERY):
        if monitor.polls % VF_EVERY == 0:
            return
        monitor.poll(entries)


def test_a_vf_whose_checks_flap_is_latched_and_its_pf_stays_ok(gpu_server: FakeSysfs) -> None:
    qat, vf = "0000:6b:00.0", "0000:6b:00.1"
    policy = HealthPolicy(recover_polls=1, failed_hold=0)
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, policy, clock=Ticks())
    for address in (qat, vf):
        healthy(gpu_server, address, 0x8086, link=address == qat)
    entries = discover(gpu_server, Kind.QAT)
    monitor.attach(entries)
    for errors in range(1, policy.flap_count + 1):
        set_aer(gpu_server, vf, "fatal", {"Poisoned TLP": errors})
        vf_turn(monitor, entries)  # failed
        vf_turn(monitor, entries)  # a clean poll: well again, until it flaps
    [entry] = [e for e in monitor.attach(entries) if e.pci and e.pci.address == qat]
    [vf_health] = [f.health for f in entry.virtual_functions if f.address == vf]
    assert entry.health is not None and entry.health.state == "ok"
    assert vf_health is not None and vf_health.state == "failed"
    flapping = next(c for c in vf_health.checks if c.check == "flapping")
    assert flapping.latch and flapping.severity == "failed"


def test_a_new_device_below_a_bridge_leaves_the_bridges_errors_to_the_next_poll(
    tmp_path: Path,
) -> None:
    """A device discovered between two polls is read at once, as a baseline: an error
    counted at the bridge above it since the last poll is still seen by that poll,
    by the devices below the bridge, and not taken by the newcomer alone."""
    bridge, known, new = "0000:16:00.0", "0000:17:00.0", "0000:17:00.1"
    tree = FakeSysfs(tmp_path)
    tree.add(FakeFunction(bridge, 0x8086, 0x347A, 0x060400, driver="pcieport"))
    tree.add(FakeFunction(known, 0x10DE, 0x2331, 0x030200, upstream=bridge))
    for address in (bridge, known):
        healthy(tree, address, 0x10DE)
    monitor = HealthMonitor(Kind.GPU, tree.root, clock=Ticks())
    monitor.attach(discover(tree, Kind.GPU))
    monitor.poll(discover(tree, Kind.GPU))
    set_aer(tree, bridge, "fatal", {"Surprise Down Error": 1})
    tree.add(FakeFunction(new, 0x10DE, 0x2331, 0x030200, upstream=bridge))
    healthy(tree, new, 0x10DE)
    entries = discover(tree, Kind.GPU)
    states = {e.pci.address: e.health.state for e in monitor.attach(entries) if e.pci and e.health}
    assert states == {known: "ok", new: "ok"}  # the newcomer's first look is a baseline
    monitor.poll(entries)
    [entry] = [e for e in monitor.attach(entries) if e.pci and e.pci.address == known]
    assert entry.health is not None and entry.health.state == "failed"
    assert entry.health.checks[0].value == f"+1 (Surprise Down Error +1) at upstream {bridge}"


def test_an_unchanged_health_hands_back_the_last_attached_list(gpu_server: FakeSysfs) -> None:
    """An idle driver's discoveries re-use their last scan's entries; with no health
    changed since, the entries with health are the very list of the last discovery,
    which the driver then need not render and hash again."""
    qat = "0000:6b:00.0"
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=Ticks())
    healthy(gpu_server, qat, 0x8086)
    entries = discover(gpu_server, Kind.QAT)
    first = monitor.attach(entries)
    monitor.poll(entries)  # nothing moved
    assert monitor.attach(entries) is first
    assert monitor.attach(discover(gpu_server, Kind.QAT)) is not first  # a new scan's
    set_aer(gpu_server, qat, "fatal", {"Poisoned TLP": 1})
    assert monitor.poll(entries)
    changed = monitor.attach(entries)
    assert changed is not first
    health = {e.pci.address: e.health for e in changed if e.pci}[qat]
    assert health is not None and health.state == "failed"
    assert monitor.attach(entries) is changed


def test_a_file_a_function_has_not_is_looked_for_again_only_with_another_driver(
    gpu_server: FakeSysfs,
) -> None:
    """A function's files come with the device and with its driver's binding, so one
    found missing is not opened again at every poll while the function keeps its
    driver; another driver, or the function's coming back, looks again."""
    qat = "0000:6b:00.0"
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=Ticks())
    healthy(gpu_server, qat, 0x8086)
    fatal = gpu_server.device_dir(qat) / "aer_dev_fatal"
    fatal.unlink()  # this function counts no fatal errors
    entries = discover(gpu_server, Kind.QAT)
    monitor.attach(entries)
    for count in (1, 2):  # a fatal error, were the file read
        set_aer(gpu_server, qat, "fatal", {"Poisoned TLP": count})
        monitor.poll(entries)
    health = {e.pci.address: e.health for e in monitor.attach(entries) if e.pci}[qat]
    assert health is not None and health.state == "ok"
    (pf,) = [e for e in entries if e.pci and e.pci.address == qat]
    assert pf.pci is not None
    rebound = pf.model_copy(update={"pci": pf.pci.model_copy(update={"driver": "vfio-pci"})})
    monitor.poll([rebound])  # the baseline of the file found now
    set_aer(gpu_server, qat, "fatal", {"Poisoned TLP": 3})
    assert monitor.poll([rebound])
    health = {e.pci.address: e.health for e in monitor.attach([rebound]) if e.pci}[qat]
    assert health is not None and health.state == "failed"


def test_only_a_missing_file_is_remembered_missing(tmp_path: Path) -> None:
    absent = Absent()
    assert absent.text(str(tmp_path / "config")) is None
    (tmp_path / "config").write_text("answers")
    assert absent.text(str(tmp_path / "config")) is None  # remembered missing
    (tmp_path / "aer_dev_fatal").mkdir()  # there, but unreadable as a file
    assert absent.text(str(tmp_path / "aer_dev_fatal")) is None
    (tmp_path / "aer_dev_fatal").rmdir()
    (tmp_path / "aer_dev_fatal").write_text("TOTAL_ERR_FATAL 0\n")
    assert absent.text(str(tmp_path / "aer_dev_fatal")) == "TOTAL_ERR_FATAL 0"
    assert Absent().text(str(tmp_path / "config")) == "answers"


def test_a_qats_files_made_when_it_comes_up_are_read_once_it_is_up(gpu_server: FakeSysfs) -> None:
    """The QAT driver makes its heartbeat (debugfs) and RAS counters when the device
    comes up and removes them when it goes down, its binding unchanged: found missing
    while it was down, they are looked for again once its state moved."""
    qat = "0000:6b:00.0"
    monitor = HealthMonitor(Kind.QAT, gpu_server.root, clock=Ticks())
    healthy(gpu_server, qat, 0x8086)
    set_qat_state(gpu_server, qat, "down")
    entries = discover(gpu_server, Kind.QAT)
    monitor.attach(entries)
    monitor.poll(entries)
    set_qat_state(gpu_server, qat, "up")
    set_qat_heartbeat(gpu_server, qat, -1)
    set_qat_ras(gpu_server, qat, "fatal", 0)
    monitor.poll(entries)
    set_qat_ras(gpu_server, qat, "fatal", 1)
    monitor.poll(entries)
    health = {e.pci.address: e.health for e in monitor.attach(entries) if e.pci}[qat]
    assert health is not None
    checks = {check.check: check.value for check in health.checks}
    assert checks["qat_heartbeat"] == "unresponsive (-1)"
    assert checks["qat_ras_fatal"] == "+1"
