"""Reading PCI functions from sysfs, exactly as Linux lays them out.

``<root>/sys/bus/pci/devices/<DDDD:BB:DD.F>`` is a link into ``sys/devices``; its
attributes are small text files (``vendor`` reads ``0x10de``), and its relations are
links (``driver``, ``iommu_group``, ``physfn``, ``virtfnN``). Reads are tolerant: an
attribute that is missing or unreadable is ``None``, and a function that vanishes
mid-scan is skipped, because hot-plug and driver rebinds happen while we look.

A scan has two passes so that a server with a thousand functions costs little: the
identity of every function from its one ``uevent`` file, then the full facts only
of the functions a kind asked for, fewer for a virtual function than for a physical
one. Reads use ``os.open`` and plain string paths: on a scan of thousands of small
files, Python's file objects and ``pathlib`` cost more than the system calls.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from accel.internal.schemas import MdevType, PciFunctionFacts

PCI_DEVICES = "sys/bus/pci/devices"
_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_VIRTFN = re.compile(r"^virtfn(\d+)$")


@dataclass(frozen=True, slots=True)
class PciIdentity:
    """What a function is, from its ``uevent`` (or its id files on old kernels)."""

    address: str
    vendor_id: int
    device_id: int
    class_code: int
    subsystem_vendor_id: int | None = None
    subsystem_device_id: int | None = None
    driver: str | None = None

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
    directory: str
    revision: int | None = None
    numa_node: int | None = None
    local_cpulist: str | None = None
    iommu_group: int | None = None
    link: dict[str, str] = field(default_factory=dict)
    sriov_total_vfs: int | None = None
    sriov_num_vfs: int | None = None
    physfn: str | None = None
    virtfns: tuple[str, ...] = ()
    mdev_types: tuple[MdevType, ...] = ()
    net_interfaces: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def driver(self) -> str | None:
        return self.identity.driver

    def facts(self) -> PciFunctionFacts:
        identity = self.identity
        return PciFunctionFacts(
            address=self.address,
            vendor_id=f"{identity.vendor_id:04x}",
            product_id=f"{identity.device_id:04x}",
            class_code=f"{identity.class_code:06x}",
            subsystem_vendor_id=_hex4(identity.subsystem_vendor_id),
            subsystem_product_id=_hex4(identity.subsystem_device_id),
            revision=None if self.revision is None else f"{self.revision:02x}",
            numa_node=self.numa_node,
            local_cpulist=self.local_cpulist,
            driver=identity.driver,
            iommu_group=self.iommu_group,
            current_link_speed=self.link.get("current_link_speed"),
            max_link_speed=self.link.get("max_link_speed"),
            current_link_width=self.link.get("current_link_width"),
            max_link_width=self.link.get("max_link_width"),
        )


def _hex4(value: int | None) -> str | None:
    return None if value is None else f"{value:04x}"


def read_text(path: str) -> str | None:
    """A sysfs attribute's text, or None if it is missing or unreadable."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(descriptor, 65536)
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return data.decode("ascii", "replace").strip()


def read_int(path: str, base: int) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text, base)
    except ValueError:
        return None


def link_name(path: str) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def devices_dir(sysfs_root: Path) -> str:
    return os.path.join(sysfs_root, PCI_DEVICES)


def scan_identities(sysfs_root: Path) -> list[PciIdentity]:
    """The identity of every PCI function under ``sysfs_root``, sorted by address."""
    base = devices_dir(sysfs_root)
    identities = []
    for address in sorted(listdir(base)):
        if _ADDRESS.match(address):
            identity = read_identity(f"{base}/{address}", address)
            if identity is not None:
                identities.append(identity)
    return identities


def read_identity(directory: str, address: str) -> PciIdentity | None:
    fields = _uevent(read_text(f"{directory}/uevent"))
    ids = _id_pair(fields.get("PCI_ID"))
    class_code = _hex(fields.get("PCI_CLASS"))
    if ids is None or class_code is None:
        return _identity_from_id_files(directory, address, fields.get("DRIVER"))
    subsystem = _id_pair(fields.get("PCI_SUBSYS_ID"))
    return PciIdentity(
        address,
        ids[0],
        ids[1],
        class_code,
        subsystem[0] if subsystem else None,
        subsystem[1] if subsystem else None,
        fields.get("DRIVER"),
    )


def _hex(text: str | None) -> int | None:
    try:
        return None if text is None else int(text, 16)
    except ValueError:
        return None


def _id_pair(text: str | None) -> tuple[int, int] | None:
    """``10DE:2331`` as two numbers."""
    first, _, second = (text or "").partition(":")
    high, low = _hex(first), _hex(second)
    return None if high is None or low is None else (high, low)


def _uevent(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _identity_from_id_files(directory: str, address: str, driver: str | None) -> PciIdentity | None:
    vendor = read_int(f"{directory}/vendor", 16)
    device = read_int(f"{directory}/device", 16)
    class_code = read_int(f"{directory}/class", 16)
    if vendor is None or device is None or class_code is None:
        return None  # vanished mid-scan, or not a PCI function at all
    return PciIdentity(
        address,
        vendor,
        device,
        class_code,
        read_int(f"{directory}/subsystem_vendor", 16),
        read_int(f"{directory}/subsystem_device", 16),
        driver or link_name(f"{directory}/driver"),
    )


def read_function(sysfs_root: Path, identity: PciIdentity) -> PciFunction | None:
    """The facts of one function, or None if it vanished meanwhile."""
    directory = f"{devices_dir(sysfs_root)}/{identity.address}"
    physfn = link_name(f"{directory}/physfn")
    group = link_name(f"{directory}/iommu_group")
    revision = read_int(f"{directory}/revision", 16)
    iommu_group = int(group) if group and group.isascii() and group.isdigit() else None
    if physfn is not None:
        # A VF shares its PF's NUMA node, CPUs and link: read only what is its own.
        return PciFunction(
            identity, directory, revision=revision, iommu_group=iommu_group, physfn=physfn
        )
    entries = listdir(directory)
    if not entries:
        return None
    numa_node = read_int(f"{directory}/numa_node", 10)
    virtfns = sorted((int(m.group(1)), e) for e in entries if (m := _VIRTFN.match(e)))
    return PciFunction(
        identity,
        directory,
        revision=revision,
        iommu_group=iommu_group,
        numa_node=None if numa_node is None or numa_node < 0 else numa_node,
        local_cpulist=read_text(f"{directory}/local_cpulist") or None,
        link=_link_facts(directory, entries),
        sriov_total_vfs=read_int(f"{directory}/sriov_totalvfs", 10),
        sriov_num_vfs=read_int(f"{directory}/sriov_numvfs", 10),
        virtfns=tuple(
            name for _, entry in virtfns if (name := link_name(f"{directory}/{entry}")) is not None
        ),
        mdev_types=read_mdev_types(directory) if "mdev_supported_types" in entries else (),
        net_interfaces=tuple(sorted(listdir(f"{directory}/net"))) if "net" in entries else (),
    )


_LINK_ATTRIBUTES = ("current_link_speed", "max_link_speed", "current_link_width", "max_link_width")


def _link_facts(directory: str, entries: list[str]) -> dict[str, str]:
    facts = {}
    for name in _LINK_ATTRIBUTES:
        if name in entries:
            value = read_text(f"{directory}/{name}")
            if value and value != "Unknown":
                facts[name] = value
    return facts


def read_mdev_types(directory: str) -> tuple[MdevType, ...]:
    """The mediated-device types a function offers (vGPU-like sharing)."""
    types_dir = f"{directory}/mdev_supported_types"
    found = []
    for type_id in sorted(listdir(types_dir)):
        base = f"{types_dir}/{type_id}"
        available = read_int(f"{base}/available_instances", 10)
        found.append(
            MdevType(
                type_id=type_id,
                name=read_text(f"{base}/name"),
                description=read_text(f"{base}/description"),
                device_api=read_text(f"{base}/device_api"),
                available_instances=available,
                instances=len(listdir(f"{base}/devices")),
            )
        )
    return tuple(found)
