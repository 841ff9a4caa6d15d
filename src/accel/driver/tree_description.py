"""Describes a live server's PCI functions in the TOML that ``build_from_description``
reads, so that the fake trees the tests run on are copied from real servers.

Run on the server: ``python -m accel.driver.tree_description / > server.toml``. It
reads only what discovery reads (ids, driver, NUMA node, CPUs, link, SR-IOV counts,
the kind files of QAT, FPGA and NIC functions), through discovery's own readers, and
names no host beyond its PCI addresses. Virtual functions are written as a ``vfs``
count on their physical function, which the builder lays out again after it.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from accel.driver.health.pcie import upstream_bridge
from accel.driver.pci import (
    PciFunction,
    PciIdentity,
    read_function,
    read_text,
    scan_identities,
)

# Kind files worth copying, relative to a function's directory (see kind_facts).
_KIND_FILES = (
    "qat/cfg_services",
    "qat/state",
    "fpga_region/region*/compat_id",
    "fpga_region/region*/dfl-port.*/afu_id",
    "fpga/intel-fpga-dev.*/intel-fpga-port.*/afu_id",
    "fpga/intel-fpga-dev.*/intel-fpga-fme.*/pr/interface_id",
    "net/*/phys_switch_id",
    "net/*/address",
    "mdev_supported_types/*/name",
    "mdev_supported_types/*/description",
    "mdev_supported_types/*/device_api",
    "mdev_supported_types/*/available_instances",
)


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _inline(table: Mapping[str, str | int]) -> str:
    items = (
        f"{_quoted(key)} = {value if isinstance(value, int) else _quoted(value)}"
        for key, value in table.items()
    )
    return "{ " + ", ".join(items) + " }"


def _kind_files(function: PciFunction) -> dict[str, str]:
    found: dict[str, str] = dict(function.link)
    for pattern in _KIND_FILES:
        for path in sorted(glob.glob(f"{function.directory}/{pattern}")):
            value = read_text(path)
            if value:
                found[os.path.relpath(path, function.directory)] = value
    # An mdev instance is a link in the type's devices/; a plain file counts the same.
    for path in sorted(glob.glob(f"{function.directory}/mdev_supported_types/*/devices/*")):
        found[os.path.relpath(path, function.directory)] = "instance"
    return found


def _vfs(function: PciFunction, identities: dict[str, PciIdentity]) -> dict[str, str | int] | None:
    virtual = [identities[a] for a in function.virtfns if a in identities]
    if not virtual:
        return None
    first = virtual[0]
    pf_slot = int(function.address.split(":")[2].split(".")[0], 16)
    device, _, number = first.address.split(":")[2].partition(".")
    table: dict[str, str | int] = {
        "count": len(virtual),
        "id": f"{first.device_id:04x}",
        # Where the first VF sits, counted in functions from the PF's own slot.
        "first_function": int(device, 16) * 8 + int(number) - pf_slot * 8,
    }
    if first.driver:
        table["driver"] = first.driver
    return table


def _function(function: PciFunction, identities: dict[str, PciIdentity]) -> list[str]:
    identity = function.identity
    lines = [
        "[[function]]",
        f"address = {_quoted(function.address)}",
        f'id = "{identity.vendor_id:04x}:{identity.device_id:04x}"',
        f'class = "{identity.class_code:06x}"',
    ]
    if identity.subsystem_vendor_id is not None and identity.subsystem_device_id is not None:
        lines.append(
            f'subsystem = "{identity.subsystem_vendor_id:04x}:{identity.subsystem_device_id:04x}"'
        )
    if function.revision is not None:
        lines.append(f'revision = "{function.revision:02x}"')
    if identity.driver:
        lines.append(f"driver = {_quoted(identity.driver)}")
    if function.numa_node is not None:
        lines.append(f"numa = {function.numa_node}")
    if function.local_cpulist:
        lines.append(f"cpus = {_quoted(function.local_cpulist)}")
    if function.iommu_group is not None:
        lines.append(f"iommu_group = {function.iommu_group}")
    if function.sriov_total_vfs is not None:
        lines.append(f"sriov_total_vfs = {function.sriov_total_vfs}")
    bridge = upstream_bridge(function.directory)
    if bridge is not None and os.path.basename(bridge) in identities:
        # Health attributes the bridge's AER counts to the functions below it.
        lines.append(f"upstream = {_quoted(os.path.basename(bridge))}")
    files = _kind_files(function)
    if files:
        lines.append(f"files = {_inline(files)}")
    vfs = _vfs(function, identities)
    if vfs:
        lines.append(f"vfs = {_inline(vfs)}")
    return lines


def describe(sysfs_root: Path) -> str:
    """The TOML description of every PCI function under ``sysfs_root``."""
    identities = {identity.address: identity for identity in scan_identities(sysfs_root)}
    functions = [
        function
        for identity in identities.values()
        # None: gone meanwhile; a VF: its PF's ``vfs`` stands for it.
        if (function := read_function(sysfs_root, identity)) is not None and function.physfn is None
    ]
    header = [f"# Described from {sysfs_root} by accel.driver.tree_description."]
    if all(function.iommu_group is None for function in functions):
        header.append("iommu = false")  # else the builder would give each a group
    blocks = ["\n".join(_function(function, identities)) for function in functions]
    return "\n".join(header) + "\n\n" + "\n\n".join(blocks) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m accel.driver.tree_description SYSFS_ROOT", file=sys.stderr)
        return 2
    sys.stdout.write(describe(Path(argv[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
