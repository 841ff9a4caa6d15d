"""Builds fake sysfs trees of plain files and links, laid out as Linux lays out /sys.

Tests, the demo tree under examples/ and the fleet simulator use these trees, so
discovery runs on the very code paths it runs on a real server: ``open`` and
``readlink`` on a directory tree, nothing mocked. Run as a module to write the
example GPU server: ``python -m accel.driver.fake_sysfs examples/gpu-server``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class FakeFunction:
    """One PCI function to lay down; ids are numbers, as the kernel writes them."""

    address: str
    vendor: int
    device: int
    class_code: int
    subsystem_vendor: int = 0
    subsystem_device: int = 0
    revision: int = 0
    numa_node: int = -1
    driver: str | None = None
    iommu_group: int | None = None
    sriov_total_vfs: int | None = None
    local_cpulist: str | None = None
    files: dict[str, str] = field(default_factory=dict)
    # The bridge (root or switch port) above it, already added: sysfs nests it there.
    upstream: str | None = None


class FakeSysfs:
    """A sysfs tree under ``root``; ``root`` plays the part of ``/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.sys = root / "sys"
        (self.sys / "bus/pci/devices").mkdir(parents=True, exist_ok=True)
        (self.sys / "bus/pci/drivers").mkdir(parents=True, exist_ok=True)
        (self.sys / "kernel/iommu_groups").mkdir(parents=True, exist_ok=True)
        # Write-only in the kernel; setup writes an address here to have it probed.
        (self.sys / "bus/pci/drivers_probe").touch()

    def device_dir(self, address: str) -> Path:
        link = self.sys / "bus/pci/devices" / address
        if link.is_symlink():
            return Path(os.path.normpath(link.parent / os.readlink(link)))
        domain, bus, _ = address.split(":")
        return self.sys / "devices" / f"pci{domain}:{bus}" / address

    def add(self, function: FakeFunction) -> Path:
        if function.upstream is not None:
            directory = self.device_dir(function.upstream) / function.address
        else:
            directory = self.device_dir(function.address)
        directory.mkdir(parents=True, exist_ok=True)
        attributes = {
            "vendor": f"0x{function.vendor:04x}",
            "device": f"0x{function.device:04x}",
            "class": f"0x{function.class_code:06x}",
            "subsystem_vendor": f"0x{function.subsystem_vendor:04x}",
            "subsystem_device": f"0x{function.subsystem_device:04x}",
            "revision": f"0x{function.revision:02x}",
            "numa_node": str(function.numa_node),
            "enable": "1",
            "uevent": _uevent(function),
            "driver_override": "(null)",  # as the kernel shows it when none is set
            **function.files,
        }
        if function.local_cpulist is not None:
            attributes["local_cpulist"] = function.local_cpulist
        if function.sriov_total_vfs is not None:
            attributes.setdefault("sriov_totalvfs", str(function.sriov_total_vfs))
            attributes.setdefault("sriov_numvfs", "0")
        for name, value in attributes.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
        self._link(self.sys / "bus/pci/devices" / function.address, directory)
        if function.driver is not None:
            self.bind(function.address, function.driver)
        if function.iommu_group is not None:
            group = self.sys / "kernel/iommu_groups" / str(function.iommu_group)
            (group / "devices").mkdir(parents=True, exist_ok=True)
            (group / "type").write_text("DMA-FQ\n")
            self._link(group / "devices" / function.address, directory)
            self._link(directory / "iommu_group", group)
        return directory

    def add_virtual_functions(
        self,
        physical: FakeFunction,
        vf_device: int,
        addresses: list[str],
        driver: str | None = None,
    ) -> None:
        """Enables VFs on ``physical`` as the kernel does: the VFs, their links, the count."""
        pf_dir = self.device_dir(physical.address)
        for index, address in enumerate(addresses):
            vf = replace(
                physical,
                address=address,
                upstream=physical.upstream,
                device=vf_device,
                driver=driver,
                sriov_total_vfs=None,
                files={},
                iommu_group=None
                if physical.iommu_group is None
                else physical.iommu_group * 1000 + index + 1,
            )
            vf_dir = self.add(vf)
            self._link(pf_dir / f"virtfn{index}", vf_dir)
            self._link(vf_dir / "physfn", pf_dir)
        (pf_dir / "sriov_numvfs").write_text(f"{len(addresses)}\n")

    def bind(self, address: str, driver: str) -> None:
        directory = self.device_dir(address)
        uevent = directory / "uevent"
        lines = [line for line in uevent.read_text().splitlines() if not line.startswith("DRIVER=")]
        uevent.write_text("\n".join([f"DRIVER={driver}", *lines]) + "\n")
        driver_dir = self.sys / "bus/pci/drivers" / driver
        driver_dir.mkdir(parents=True, exist_ok=True)
        for control in ("bind", "unbind"):  # write-only in the kernel
            (driver_dir / control).touch()
        self._link(driver_dir / address, directory)
        self._link(directory / "driver", driver_dir)

    def set_attribute(self, address: str, name: str, value: str) -> None:
        (self.device_dir(address) / name).write_text(value + "\n")

    def remove(self, address: str) -> None:
        """The function falls off the bus: its link and its directory go."""
        link = self.sys / "bus/pci/devices" / address
        if link.is_symlink():
            link.unlink()
        shutil.rmtree(self.device_dir(address), ignore_errors=True)

    def _link(self, link: Path, target: Path) -> None:
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(target, link.parent))


def _uevent(function: FakeFunction) -> str:
    """The uevent file as the kernel writes it for a PCI function (without DRIVER)."""
    ids = f"{function.vendor:04X}:{function.device:04X}"
    subsystem = f"{function.subsystem_vendor:04X}:{function.subsystem_device:04X}"
    base, sub, prog_if = (
        function.class_code >> 16,
        (function.class_code >> 8) & 0xFF,
        function.class_code & 0xFF,
    )
    modalias = (
        f"pci:v0000{function.vendor:04X}d0000{function.device:04X}"
        f"sv0000{function.subsystem_vendor:04X}sd0000{function.subsystem_device:04X}"
        f"bc{base:02X}sc{sub:02X}i{prog_if:02X}"
    )
    return "\n".join(
        [
            f"PCI_CLASS={function.class_code:X}",
            f"PCI_ID={ids}",
            f"PCI_SUBSYS_ID={subsystem}",
            f"PCI_SLOT_NAME={function.address}",
            f"MODALIAS={modalias}",
        ]
    )


def _functions(bus: str, count: int, first_device: int = 0, first_function: int = 1) -> list[str]:
    """Addresses of ``count`` VFs, packed eight functions to a device number."""
    addresses = []
    slot = first_device * 8 + first_function
    for _ in range(count):
        addresses.append(f"0000:{bus}:{slot // 8:02x}.{slot % 8}")
        slot += 1
    return addresses


def build_gpu_server(root: Path) -> FakeSysfs:
    """A two-socket GPU server: four H100s, two QAT PFs (one with VFs), an Intel PAC
    FPGA, a dual-port E810 NIC (one port with VFs), a Gaudi2, and the ordinary devices
    (chipset, BMC VGA, NVMe, a plain NIC, an NVSwitch) that discovery must pass over."""
    tree = FakeSysfs(root)
    ordinary = [
        FakeFunction("0000:00:00.0", 0x8086, 0x09A2, 0x060000),
        FakeFunction("0000:00:17.0", 0x8086, 0xA182, 0x010601, driver="ahci"),
        FakeFunction("0000:02:00.0", 0x1A03, 0x2000, 0x030000, driver="ast"),
        FakeFunction("0000:04:00.0", 0x14E4, 0x165F, 0x020000, driver="tg3"),
        FakeFunction("0000:5a:00.0", 0x144D, 0xA80A, 0x010802, driver="nvme", numa_node=0),
        FakeFunction("0000:07:00.0", 0x10DE, 0x22A3, 0x068000, driver="nvidia-nvswitch"),
    ]
    for function in ordinary:
        tree.add(function)
    for index, (address, numa) in enumerate(
        [("0000:17:00.0", 0), ("0000:31:00.0", 0), ("0000:b1:00.0", 1), ("0000:ca:00.0", 1)]
    ):
        tree.add(
            FakeFunction(
                address,
                0x10DE,
                0x2331,
                0x030200,
                subsystem_vendor=0x10DE,
                subsystem_device=0x1626,
                revision=0xA1,
                numa_node=numa,
                driver="nvidia",
                iommu_group=20 + index,
                sriov_total_vfs=32,
                files={"current_link_speed": "32.0 GT/s PCIe", "current_link_width": "16"},
            )
        )
    qat = FakeFunction(
        "0000:6b:00.0",
        0x8086,
        0x4940,
        0x0B4000,
        subsystem_vendor=0x8086,
        subsystem_device=0x0000,
        revision=0x40,
        numa_node=0,
        driver="4xxx",
        iommu_group=40,
        sriov_total_vfs=16,
        files={"qat/cfg_services": "sym;dc", "qat/state": "up"},
    )
    tree.add(qat)
    tree.add_virtual_functions(qat, 0x4941, _functions("6b", 4), driver="vfio-pci")
    tree.add(replace(qat, address="0000:70:00.0", numa_node=1, iommu_group=41))
    tree.add(
        FakeFunction(
            "0000:86:00.0",
            0x8086,
            0x09C4,
            0x120000,
            subsystem_vendor=0x8086,
            subsystem_device=0x0000,
            numa_node=1,
            driver="dfl-pci",
            iommu_group=50,
        )
    )
    nic = FakeFunction(
        "0000:98:00.0",
        0x8086,
        0x1592,
        0x020000,
        subsystem_vendor=0x8086,
        subsystem_device=0x0002,
        revision=0x02,
        numa_node=1,
        driver="ice",
        iommu_group=60,
        sriov_total_vfs=128,
    )
    tree.add(nic)
    tree.add_virtual_functions(
        nic, 0x1889, _functions("98", 8, first_device=1, first_function=0), driver="iavf"
    )
    tree.add(replace(nic, address="0000:98:00.1", iommu_group=61))
    tree.add(
        FakeFunction(
            "0000:e3:00.0",
            0x1DA3,
            0x1020,
            0x120000,
            numa_node=1,
            driver="habanalabs",
            iommu_group=70,
        )
    )
    return tree


def build_from_description(description: Path, root: Path) -> FakeSysfs:
    """A tree from a readable TOML description of a server (see tests/trees/).

    Each ``[[function]]`` names ``id = "VVVV:DDDD"``, ``class = "CCSSPP"`` and either
    ``address`` or ``addresses`` (the same card in several slots); optional
    ``subsystem``, ``revision``, ``driver``, ``numa``, ``cpus``, ``iommu_group``,
    ``sriov_total_vfs``, ``files`` (extra attributes by relative path),
    ``upstream`` (the address of the bridge above it, described too) and
    ``vfs = {count, id, driver}`` to enable virtual functions. A function without
    ``iommu_group`` gets a group of its own, unless the document says ``iommu = false``
    (a machine without an IOMMU, such as most virtual machines).
    """
    document = tomllib.loads(description.read_text())
    tree = FakeSysfs(root)
    group = 100
    iommu = bool(document.get("iommu", True))
    for spec in _bridges_first(document.get("function", [])):
        addresses = spec.get("addresses") or [spec["address"]]
        for address in addresses:
            group += 1
            function = _function_from(spec, address, group if iommu else None)
            tree.add(function)
            vfs = spec.get("vfs")
            if vfs and vfs.get("count", 0):
                bus = address.split(":")[1]
                slot = int(address.split(":")[2].split(".")[0], 16)
                vf_addresses = _functions(
                    bus,
                    vfs["count"],
                    first_device=slot,
                    first_function=int(vfs.get("first_function", 1)),
                )
                tree.add_virtual_functions(
                    function, int(vfs["id"], 16), vf_addresses, driver=vfs.get("driver")
                )
    return tree


def _bridges_first(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The specs in an order where every ``upstream`` bridge comes before what hangs below."""
    ordered: list[dict[str, Any]] = []
    placed: set[str] = set()
    waiting = list(specs)
    while waiting:
        ready = [s for s in waiting if s.get("upstream") in (None, *placed)]
        if not ready:
            missing = sorted({str(s.get("upstream")) for s in waiting})
            raise ValueError(f"upstream bridge(s) {', '.join(missing)} not described")
        for spec in ready:
            ordered.append(spec)
            placed.update(spec.get("addresses") or [spec["address"]])
        waiting = [s for s in waiting if s not in ready]
    return ordered


def _function_from(spec: dict[str, Any], address: str, group: int | None) -> FakeFunction:
    vendor, device = (int(part, 16) for part in spec["id"].split(":"))
    subsystem_vendor, subsystem_device = (
        int(part, 16) for part in spec.get("subsystem", "0000:0000").split(":")
    )
    return FakeFunction(
        address=address,
        vendor=vendor,
        device=device,
        class_code=int(spec["class"], 16),
        subsystem_vendor=subsystem_vendor,
        subsystem_device=subsystem_device,
        revision=int(spec.get("revision", "00"), 16),
        numa_node=int(spec.get("numa", -1)),
        driver=spec.get("driver"),
        iommu_group=spec.get("iommu_group", group),
        sriov_total_vfs=spec.get("sriov_total_vfs"),
        local_cpulist=spec.get("cpus"),
        files={str(k): str(v) for k, v in spec.get("files", {}).items()},
        upstream=spec.get("upstream"),
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m accel.driver.fake_sysfs DIRECTORY", file=sys.stderr)
        return 2
    target = Path(argv[0])
    shutil.rmtree(target / "sys", ignore_errors=True)
    build_gpu_server(target)
    print(f"wrote a fake GPU server's sysfs under {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
