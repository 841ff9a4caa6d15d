"""A driver reading a fake tree skips its scan while nothing in the tree changed, and
sees each change at its very next discovery (accel.driver.tree_watch, through the
process's one watch per tree, accel.driver.change_watch).

Real files and the kernel's real inotify: a change is queued by the very call that
makes it, so no test waits for one. Scans are counted by the discoverer itself.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from accel.driver import tree_watch
from accel.driver.change_watch import watch_tree
from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs, build_gpu_server
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.internal.schemas import HardwareEntry, Kind
from accel.internal.versions import VersionRange

NEW_GPU = "0000:d0:00.0"
QAT_WITHOUT_VFS = FakeFunction(
    "0000:70:00.0",
    0x8086,
    0x4940,
    0x0B4000,
    numa_node=1,
    driver="4xxx",
    iommu_group=41,
    sriov_total_vfs=16,
)
NIC = "0000:98:00.1"


@dataclass(frozen=True)
class CountingDiscoverer(Discoverer):
    """A real discoverer that counts its scans."""

    scans: list[str] = field(default_factory=list, compare=False, repr=False)

    def discover(self, node: str) -> list[HardwareEntry]:
        self.scans.append(node)
        return super().discover(node)


def driver(root: Path, kind: Kind) -> DriverService:
    """A driver as ``accel driver`` or the agent makes it: its watch is the process's."""
    return DriverService(
        DriverSettings(
            discoverer=CountingDiscoverer(kind, root, names=PciIdDatabase.empty()),
            agent="http://127.0.0.1:9",
            endpoint="127.0.0.1:9",
            token="t",
            versions=VersionRange(),
            node="node1",
            health_interval=None,
        )
    )


def scans(service: DriverService) -> int:
    discoverer = service.settings.discoverer
    assert isinstance(discoverer, CountingDiscoverer)
    return len(discoverer.scans)


def by_address(service: DriverService) -> dict[str, HardwareEntry]:
    return {e.pci.address: e for e in service._discover() if e.pci is not None}


def inotify_instances() -> int:
    """How many inotify instances this process holds open (once the watches of drivers
    that earlier tests left in reference cycles are collected)."""
    gc.collect()
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
        except OSError:
            continue  # the descriptor listdir itself used
    return count


def _link_speed(tree: FakeSysfs) -> None:
    tree.set_attribute("0000:17:00.0", "current_link_speed", "16.0 GT/s PCIe")


def _gpu_added(tree: FakeSysfs) -> None:
    tree.add(FakeFunction(NEW_GPU, 0x10DE, 0x2331, 0x030200, driver="nvidia"))


def _gpu_removed(tree: FakeSysfs) -> None:
    tree.remove("0000:ca:00.0")


def _rebound(tree: FakeSysfs) -> None:
    tree.bind("0000:31:00.0", "vfio-pci")  # the uevent rewritten, the driver link moved


def _vfs_enabled(tree: FakeSysfs) -> None:
    # As the kernel does on a write to sriov_numvfs: VF directories, their bus links,
    # the PF's virtfnN links, the count.
    tree.add_virtual_functions(QAT_WITHOUT_VFS, 0x4941, ["0000:70:00.1", "0000:70:00.2"])


def _interface_renamed(tree: FakeSysfs) -> None:
    net = tree.device_dir(NIC) / "net"
    os.rename(net / "eth0", net / "ens2f1")


def _services_file_renamed(tree: FakeSysfs) -> None:
    qat = tree.device_dir("0000:6b:00.0") / "qat"
    os.rename(qat / "cfg_services", qat / "cfg_services.old")


CHANGES: dict[str, tuple[Kind, Callable[[FakeSysfs], None], Callable[[DriverService], object]]] = {
    "an attribute written": (
        Kind.GPU,
        _link_speed,
        lambda s: by_address(s)["0000:17:00.0"].pci.current_link_speed,  # type: ignore[union-attr]
    ),
    "a device and its bus link added": (Kind.GPU, _gpu_added, lambda s: sorted(by_address(s))),
    "a device and its bus link removed": (Kind.GPU, _gpu_removed, lambda s: sorted(by_address(s))),
    "a driver rebound": (
        Kind.GPU,
        _rebound,
        lambda s: by_address(s)["0000:31:00.0"].pci.driver,  # type: ignore[union-attr]
    ),
    "VFs enabled": (
        Kind.QAT,
        _vfs_enabled,
        lambda s: [f.address for f in by_address(s)["0000:70:00.0"].virtual_functions],
    ),
    "an interface renamed": (
        Kind.NIC,
        _interface_renamed,
        lambda s: by_address(s)[NIC].network.interfaces,  # type: ignore[union-attr]
    ),
    "a file renamed away": (
        Kind.QAT,
        _services_file_renamed,
        lambda s: by_address(s)["0000:6b:00.0"].qat.services,  # type: ignore[union-attr]
    ),
}


def test_an_unchanged_tree_is_not_rescanned_and_each_change_is_seen_at_the_next_discovery(
    gpu_server: FakeSysfs,
) -> None:
    (gpu_server.device_dir(NIC) / "net/eth0").mkdir(parents=True)
    services = {kind: driver(gpu_server.root, kind) for kind in (Kind.GPU, Kind.QAT, Kind.NIC)}
    for change, (kind, make_change, read) in CHANGES.items():
        service = services[kind]
        assert service.watch.sees
        before = read(service)
        count = scans(service)
        assert read(service) == before
        assert scans(service) == count, f"{change}: nothing changed, yet a scan"
        make_change(gpu_server)
        after = read(service)
        assert scans(service) == count + 1, f"{change}: no scan"
        assert after != before, change
        assert read(service) == after
        assert scans(service) == count + 1, f"{change}: a scan after the change's"


def test_a_new_directory_is_watched_before_the_scan_that_reads_it(gpu_server: FakeSysfs) -> None:
    service = driver(gpu_server.root, Kind.NIC)
    service._discover()
    interface = gpu_server.device_dir(NIC) / "net/eth0"
    interface.mkdir(parents=True)
    assert by_address(service)[NIC].network.interfaces == ["eth0"]  # type: ignore[union-attr]
    (interface / "phys_switch_id").write_text("abcd\n")  # in the directory just made
    assert by_address(service)[NIC].network.phys_switch_id == "abcd"  # type: ignore[union-attr]
    assert scans(service) == 3

    gpus = driver(gpu_server.root, Kind.GPU)
    _gpu_added(gpu_server)
    assert by_address(gpus)[NEW_GPU].pci.current_link_speed is None  # type: ignore[union-attr]
    gpu_server.set_attribute(NEW_GPU, "current_link_speed", "2.5 GT/s PCIe")
    link_speed = by_address(gpus)[NEW_GPU].pci.current_link_speed  # type: ignore[union-attr]
    assert link_speed == "2.5 GT/s PCIe"  # in the device just added
    assert scans(gpus) == 2


def test_the_drivers_of_a_process_share_one_watch_and_each_sees_every_change(
    gpu_server: FakeSysfs,
) -> None:
    instances = inotify_instances()
    services = [driver(gpu_server.root, kind) for kind in Kind]
    assert all(s.watch is services[0].watch for s in services)
    assert inotify_instances() == instances + 1
    for service in services:
        service._discover()
    _gpu_added(gpu_server)
    gpu, *others = services
    assert NEW_GPU in by_address(gpu)  # the GPU driver's look took the event off the queue
    for service in others:  # the count tells the others all the same
        service._discover()
        assert scans(service) == 2
        service._discover()
        assert scans(service) == 2


def test_a_lost_event_means_a_scan_and_the_watch_is_rebuilt(gpu_server: FakeSysfs) -> None:
    service = driver(gpu_server.root, Kind.GPU)
    service._discover()
    queue = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    gpu = gpu_server.device_dir("0000:17:00.0")
    files = [os.open(gpu / name, os.O_WRONLY | os.O_CREAT) for name in ("a", "b")]
    try:
        for index in range(queue + 2):  # alternating files, so none is merged
            os.pwrite(files[index % 2], b"x", 0)
    finally:
        for descriptor in files:
            os.close(descriptor)
    _gpu_added(gpu_server)  # its events are lost: the queue is full
    assert NEW_GPU in by_address(service)  # the overflow: a scan
    assert scans(service) == 2
    service._discover()
    assert scans(service) == 2  # rebuilt: quiet again
    gpu_server.set_attribute(NEW_GPU, "current_link_speed", "2.5 GT/s PCIe")
    link_speed = by_address(service)[NEW_GPU].pci.current_link_speed  # type: ignore[union-attr]
    assert link_speed == "2.5 GT/s PCIe"  # the new device is watched too
    assert scans(service) == 3


def test_a_tree_laid_anew_is_watched_anew(gpu_server: FakeSysfs) -> None:
    service = driver(gpu_server.root, Kind.GPU)
    service._discover()
    shutil.rmtree(gpu_server.root / "sys")
    assert by_address(service) == {}
    tree = build_gpu_server(gpu_server.root)
    assert "0000:17:00.0" in by_address(service)
    count = scans(service)
    service._discover()  # the new devices directory is watched again
    assert scans(service) == count
    _gpu_added(tree)
    assert NEW_GPU in by_address(service)


def test_when_a_watch_cannot_be_added_every_discovery_scans(
    gpu_server: FakeSysfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = driver(gpu_server.root, Kind.GPU)
    service._discover()
    source = service.watch.source
    assert isinstance(source, tree_watch.TreeWatch)
    monkeypatch.setattr(tree_watch, "MAX_DIRECTORIES", source.directories)  # the limit, met
    _gpu_added(gpu_server)  # its directory is one more than the limit
    assert NEW_GPU in by_address(service)
    for expected in (3, 4):  # nothing changed, but the watch cannot vouch for it
        service._discover()
        assert scans(service) == expected


def test_without_inotify_every_discovery_scans(
    gpu_server: FakeSysfs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree_watch, "INotify", None)  # inotify-simple not installed
    service = driver(gpu_server.root, Kind.GPU)
    assert not service.watch.sees
    for expected in (1, 2):
        service._discover()
        assert scans(service) == expected


def test_a_watch_is_closed_once_no_driver_uses_it(tmp_path: Path) -> None:
    tree = build_gpu_server(tmp_path / "node")
    instances = inotify_instances()
    watch = watch_tree(tree.root)
    assert watch is watch_tree(tree.root)
    assert inotify_instances() == instances + 1
    del watch
    assert inotify_instances() == instances


def test_a_device_directory_laid_anew_under_its_kept_link_is_watched_anew(
    gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    # The link in sys/bus/pci/devices stays; the directory it leads to (whose parent is
    # not watched) goes and comes back, as a copy of a saved tree lays it.
    service = driver(gpu_server.root, Kind.GPU)
    gpu = gpu_server.device_dir("0000:17:00.0")
    saved = tmp_path / "saved"
    shutil.copytree(gpu, saved, symlinks=True)
    service._discover()
    shutil.rmtree(gpu)
    assert "0000:17:00.0" not in by_address(service)
    shutil.copytree(saved, gpu, symlinks=True)
    assert "0000:17:00.0" in by_address(service)
    gpu_server.set_attribute("0000:17:00.0", "current_link_speed", "2.5 GT/s PCIe")
    link_speed = by_address(service)["0000:17:00.0"].pci.current_link_speed  # type: ignore[union-attr]
    assert link_speed == "2.5 GT/s PCIe"  # watched again, inside it


def test_a_bus_link_made_before_its_directory_is_followed_once_the_directory_is_there(
    gpu_server: FakeSysfs, tmp_path: Path
) -> None:
    # A tool that lays sys/bus before sys/devices ("bus" sorts first) makes the link
    # while it still leads nowhere.
    service = driver(gpu_server.root, Kind.GPU)
    service._discover()
    built = build_gpu_server(tmp_path / "other")
    _gpu_added(built)
    directory = built.device_dir(NEW_GPU)
    target = gpu_server.sys / "devices" / directory.relative_to(built.sys / "devices")
    link = gpu_server.sys / "bus/pci/devices" / NEW_GPU
    link.symlink_to(os.path.relpath(target, link.parent))
    assert NEW_GPU not in by_address(service)
    shutil.copytree(directory, target, symlinks=True)
    assert NEW_GPU in by_address(service)
    gpu_server.set_attribute(NEW_GPU, "current_link_speed", "2.5 GT/s PCIe")
    link_speed = by_address(service)[NEW_GPU].pci.current_link_speed  # type: ignore[union-attr]
    assert link_speed == "2.5 GT/s PCIe"


def test_a_devices_directory_moved_away_is_watched_anew_at_its_path(gpu_server: FakeSysfs) -> None:
    service = driver(gpu_server.root, Kind.GPU)
    service._discover()
    devices = gpu_server.sys / "bus/pci/devices"
    os.rename(devices, devices.with_name("devices.old"))  # its watch goes with it
    devices.mkdir()
    assert by_address(service) == {}
    _gpu_added(gpu_server)  # its link in the new devices directory
    assert NEW_GPU in by_address(service)
