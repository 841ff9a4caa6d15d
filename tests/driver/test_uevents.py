"""A driver skips a scan when the kernel announced no PCI change since its last one
(accel.driver.uevents), and scans when it did, after a setup action, once the last
full scan is old, and at every discovery where it has no watch.

The kernel's socket is stood in for by a datagram socket pair carrying the kernel's
message format: a test cannot make the host's kernel announce a PCI change."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.driver import service as service_module
from accel.driver.change_watch import ChangeWatch
from accel.driver.discovery import Discoverer
from accel.driver.fake_sysfs import FakeFunction, FakeSysfs
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.driver.uevents import UeventWatch, concerns_pci, kernel_uevents
from accel.internal.schemas import Kind
from accel.internal.versions import VersionRange

NEW_GPU = "0000:d0:00.0"
PCI_ADD = b"add@/devices/pci0000:d0/0000:d0:00.0\0ACTION=add\0SUBSYSTEM=pci\0SEQNUM=7\0"
TAP_ADD = b"add@/devices/virtual/net/tap0\0ACTION=add\0SUBSYSTEM=net\0SEQNUM=8\0"


@pytest.fixture
def kernel() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_only_a_pci_devices_uevent_counts() -> None:
    assert concerns_pci(PCI_ADD)
    assert concerns_pci(b"bind@/devices/pci0000:00/0000:00:02.0/0000:03:00.0\0")
    assert not concerns_pci(TAP_ADD)
    assert not concerns_pci(b"add@/module/vfio_pci\0")
    assert not concerns_pci(b"libudev\0\xfe\xed\xca\xfe")  # udevd's, on another group


def test_a_watch_says_changed_once_per_batch_of_pci_uevents(
    kernel: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = kernel
    watch = UeventWatch(ours)
    assert not watch.changed()
    theirs.send(TAP_ADD)
    assert not watch.changed()
    theirs.send(PCI_ADD)
    theirs.send(TAP_ADD)
    assert watch.changed()
    assert not watch.changed()  # drained


def test_a_fake_tree_is_never_watched(tmp_path: Path) -> None:
    assert kernel_uevents(tmp_path) is None


def addresses(service: DriverService) -> set[str]:
    return {entry.pci.address for entry in service._discover() if entry.pci is not None}


def test_a_scan_is_skipped_until_the_kernel_says_a_pci_device_changed(
    gpu_server: FakeSysfs,
    kernel: tuple[socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ours, theirs = kernel
    settings = DriverSettings(
        discoverer=Discoverer(Kind.GPU, gpu_server.root, names=PciIdDatabase.empty()),
        agent="http://127.0.0.1:9",
        endpoint="127.0.0.1:9",
        token="t",
        versions=VersionRange(),
        node="node1",
        health_interval=None,
        change_watch=lambda root: ChangeWatch(root, UeventWatch(ours)),
    )
    service = DriverService(settings)
    before = addresses(service)
    gpu_server.add(FakeFunction(NEW_GPU, 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    theirs.send(TAP_ADD)
    assert addresses(service) == before  # nothing announced: the last scan stands
    theirs.send(PCI_ADD)
    assert addresses(service) == before | {NEW_GPU}

    gpu_server.remove(NEW_GPU)
    asyncio.run(service._rediscover())  # a setup action changed the tree: a scan
    assert {e.pci.address for e in service.discoveries.result if e.pci} == before

    gpu_server.add(FakeFunction(NEW_GPU, 0x10DE, 0x2331, 0x030200, driver="nvidia"))
    monkeypatch.setattr(service_module, "FULL_SCAN_AFTER", 0.0)
    assert addresses(service) == before | {NEW_GPU}  # the last full scan is too old

    blind = DriverSettings(**{**settings.__dict__, "change_watch": lambda r: ChangeWatch(r, None)})
    without = DriverService(blind)
    assert not without.watch.sees  # no watch: a scan at every discovery
    gpu_server.remove(NEW_GPU)
    assert addresses(without) == before
