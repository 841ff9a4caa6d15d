"""Reading PCI functions from sysfs, exactly as Linux lays them out.

``<root>/sys/bus/pci/devices/<DDDD:BB:DD.F>`` is a link into ``sys/devices``; its
attributes are small text files (``vendor`` reads ``0x10de``), and its relations are
links (``driver``, ``iommu_group``, ``physfn``, ``virtfnN``). Reads are tolerant: an
attribute that is missing or unreadable is ``None``, and a function that vanishes
mid-scan is skipped, because hot-plug and driver rebinds happen while we look.

A scan has two passes so that a server with hundreds of functions costs little:
the identity (vendor, device, class) of every function, then the full facts only of
the functions a kind asked for.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from accel.internal.schemas import PciFunctionFacts

PCI_DEVICES = Path("sys/bus/pci/devices")
_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_VIRTFN = re.compile(r"^virtfn(\d+)$")


@dataclass(frozen=True, slots=True)
class PciIdentity:
    """The three attributes that say what a function is."""

    address: str
    vendor_id: int
    device_id: int
    class_code: int

    @property
    def base_class(self) -> int:
        return self.class_code >> 16

    @property
    def class_prefix(self) -> int:
        """Base class and subclass, e.g. ``0x0302`` for a 3D controller."""
        return self.class_code >> 8


@dataclass(frozen=True, slots=True)
class PciFunction:
    """Everything discovery reads about one function."""

    identity: PciIdentity
    subsystem_vendor_id: int | None
    subsystem_device_id: int | None
    revision: int | None
    numa_node: int | None
    driver: str | None
    iommu_group: int | None
    sriov_total_vfs: int | None
    sriov_num_vfs: int | None
    physfn: str | None
    virtfns: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.identity.address

    def facts(self) -> PciFunctionFacts:
        return PciFunctionFacts(
            address=self.address,
            vendor_id=f"{self.identity.vendor_id:04x}",
            product_id=f"{self.identity.device_id:04x}",
            class_code=f"{self.identity.class_code:06x}",
            subsystem_vendor_id=_hex4(self.subsystem_vendor_id),
            subsystem_product_id=_hex4(self.subsystem_device_id),
            revision=None if self.revision is None else f"{self.revision:02x}",
            numa_node=self.numa_node,
            driver=self.driver,
            iommu_group=self.iommu_group,
        )


def _hex4(value: int | None) -> str | None:
    return None if value is None else f"{value:04x}"


def _read_text(path: Path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read(4096).strip()
    except OSError:
        return None


def _read_int(path: Path, base: int) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def devices_dir(sysfs_root: Path) -> Path:
    return sysfs_root / PCI_DEVICES


def scan_identities(sysfs_root: Path) -> list[PciIdentity]:
    """The identity of every PCI function under ``sysfs_root``, sorted by address."""
    try:
        names = sorted(os.listdir(devices_dir(sysfs_root)))
    except OSError:
        return []
    identities = []
    for name in names:
        identity = read_identity(sysfs_root, name)
        if identity is not None:
            identities.append(identity)
    return identities


def read_identity(sysfs_root: Path, address: str) -> PciIdentity | None:
    if not _ADDRESS.match(address):
        return None
    directory = devices_dir(sysfs_root) / address
    vendor = _read_int(directory / "vendor", 16)
    device = _read_int(directory / "device", 16)
    class_code = _read_int(directory / "class", 16)
    if vendor is None or device is None or class_code is None:
        return None  # vanished mid-scan, or not a PCI function at all
    return PciIdentity(address, vendor, device, class_code)


def read_function(sysfs_root: Path, identity: PciIdentity) -> PciFunction | None:
    """The full facts of one function, or None if it vanished meanwhile."""
    directory = devices_dir(sysfs_root) / identity.address
    try:
        entries = os.listdir(directory)
    except OSError:
        return None
    virtfns = sorted(
        ((int(match.group(1)), entry) for entry in entries if (match := _VIRTFN.match(entry))),
    )
    numa_node = _read_int(directory / "numa_node", 10)
    iommu_group = _link_name(directory / "iommu_group")
    return PciFunction(
        identity=identity,
        subsystem_vendor_id=_read_int(directory / "subsystem_vendor", 16),
        subsystem_device_id=_read_int(directory / "subsystem_device", 16),
        revision=_read_int(directory / "revision", 16),
        numa_node=None if numa_node is None or numa_node < 0 else numa_node,
        driver=_link_name(directory / "driver"),
        iommu_group=int(iommu_group) if iommu_group and iommu_group.isdigit() else None,
        sriov_total_vfs=_read_int(directory / "sriov_totalvfs", 10),
        sriov_num_vfs=_read_int(directory / "sriov_numvfs", 10),
        physfn=_link_name(directory / "physfn") if "physfn" in entries else None,
        virtfns=tuple(
            name for _, entry in virtfns if (name := _link_name(directory / entry)) is not None
        ),
    )
