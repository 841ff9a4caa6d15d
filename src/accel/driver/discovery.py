"""Discovery: the hardware of one kind on a node, in the internal API's shape.

A hardware entry is a physical function with its virtual functions folded in (a PF
and its VFs are one device). Its uuid is derived from the node, the PCI address and
the vendor:device pair, so the same device on the same node keeps its uuid across
rediscovery and restarts, and a different card in the same slot gets a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

from accel.driver.kinds import RULES
from accel.driver.pci import PciFunction, read_function, scan_identities
from accel.internal.schemas import (
    AccSpecs,
    AccStatus,
    HardwareEntry,
    Kind,
    SriovFacts,
)

HARDWARE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "hardware.accel.invalid")

# Kinds whose physical functions are used through their VFs: with none enabled,
# the device needs setting up before it is an accelerator.
SETUP_BY_VFS = frozenset({Kind.QAT, Kind.NIC})


def hardware_uuid(node: str, function: PciFunction) -> uuid.UUID:
    identity = function.identity
    key = f"{node}/{identity.address}/{identity.vendor_id:04x}:{identity.device_id:04x}"
    return uuid.uuid5(HARDWARE_NAMESPACE, key)


def discover(kind: Kind, sysfs_root: Path, node: str) -> list[HardwareEntry]:
    """Every device of ``kind`` under ``sysfs_root``, sorted by PCI address."""
    rule = RULES[kind]
    functions: dict[str, PciFunction] = {}
    for identity in scan_identities(sysfs_root):
        if not rule.candidate(identity):
            continue
        function = read_function(sysfs_root, identity)
        if function is not None and rule.member(function):
            functions[function.address] = function
    return [
        _entry(kind, node, physical, _virtual_functions_of(physical, functions))
        for physical in functions.values()
        # A VF whose PF we can see is part of that PF's entry; one whose PF is
        # hidden (a VF passed through to a guest) stands on its own.
        if physical.physfn is None or physical.physfn not in functions
    ]


def _virtual_functions_of(
    physical: PciFunction, functions: dict[str, PciFunction]
) -> list[PciFunction]:
    return [functions[address] for address in physical.virtfns if address in functions]


def _entry(
    kind: Kind, node: str, physical: PciFunction, virtual: Iterable[PciFunction]
) -> HardwareEntry:
    virtual = list(virtual)
    sriov = None
    if physical.sriov_total_vfs:
        sriov = SriovFacts(
            total_vfs=physical.sriov_total_vfs,
            num_vfs=physical.sriov_num_vfs or 0,
        )
    setup_required = kind in SETUP_BY_VFS and sriov is not None and not virtual
    num = len(virtual) if virtual else 1
    return HardwareEntry(
        uuid=hardware_uuid(node, physical),
        acc_specs=AccSpecs(remote=0, num=num, device_type=kind, acc_capability={"num": num}),
        acc_status=AccStatus(setup_required=setup_required, reboot_required=False),
        pci=physical.facts(),
        sriov=sriov,
        virtual_functions=[function.facts() for function in virtual],
    )


def count_accelerators(sysfs_root: Path) -> dict[Kind, int]:
    """How many devices of each kind a tree holds (``accel up`` picks its tree by it)."""
    return {kind: len(discover(kind, sysfs_root, "probe")) for kind in Kind}
