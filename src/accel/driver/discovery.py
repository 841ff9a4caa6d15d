"""Discovery: the hardware of one kind on a node, in the internal API's shape.

A hardware entry is a physical function with its virtual functions folded in (a PF
and its VFs are one device); an FPGA card's other functions in the same slot (an
Alveo's management and user functions) are folded in as siblings. Its uuid is
derived from the node, the PCI address and the vendor:device pair, so the same
device on the same node keeps its uuid across rediscovery and restarts, and a
different card in the same slot gets a new one.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from accel.driver import kind_facts
from accel.driver.filters import EVERYTHING, DeviceFilter
from accel.driver.kinds import RULES
from accel.driver.nvml import NvidiaFacts, NvmlLibrary
from accel.driver.pci import PciFunction, read_function
from accel.driver.pci_ids import PciIdDatabase, default_database
from accel.driver.shared_scan import shared_identities
from accel.internal.schemas import (
    AccSpecs,
    AccStatus,
    HardwareEntry,
    Kind,
    PciFunctionFacts,
    SriovFacts,
)

HARDWARE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_DNS, "hardware.accel.invalid")
NVIDIA = 0x10DE

# Kinds whose physical functions are used through their VFs: with none enabled,
# the device needs setting up before it is an accelerator.
SETUP_BY_VFS = frozenset({Kind.QAT, Kind.NIC})


def hardware_uuid(node: str, function: PciFunction) -> uuid.UUID:
    identity = function.identity
    return device_uuid(node, identity.address, identity.vendor_id, identity.device_id)


def device_uuid(node: str, address: str, vendor_id: int, device_id: int) -> uuid.UUID:
    """The uuid of the device at PCI ``address`` of ``node``, of that vendor and model."""
    key = f"{node}/{address}/{vendor_id:04x}:{device_id:04x}"
    return uuid.uuid5(HARDWARE_NAMESPACE, key)


@dataclass(frozen=True)
class Discoverer:
    """Discovers one kind under one sysfs root, as one driver process does."""

    kind: Kind
    sysfs_root: Path
    device_filter: DeviceFilter = EVERYTHING
    names: PciIdDatabase = field(default_factory=default_database)
    nvml: NvmlLibrary | None = None

    def discover(self, node: str) -> list[HardwareEntry]:
        """Every device of this kind, sorted by PCI address."""
        rule = RULES[self.kind]
        functions: dict[str, PciFunction] = {}
        for identity in shared_identities(self.sysfs_root):
            if not rule.candidate(identity) or not self.device_filter.admits(identity):
                continue
            function = read_function(self.sysfs_root, identity)
            if function is not None and rule.member(function):
                functions[function.address] = function
        return [self._entry(node, physical, functions) for physical in _heads(self.kind, functions)]

    def _facts(self, function: PciFunction) -> PciFunctionFacts:
        identity = function.identity
        names = self.names.names(
            identity.vendor_id,
            identity.device_id,
            identity.class_code,
            identity.subsystem_vendor_id,
            identity.subsystem_device_id,
        )
        return function.facts().model_copy(
            update={
                "vendor_name": names.vendor,
                "product_name": names.device,
                "subsystem_name": names.subsystem,
                "class_name": names.class_name,
            }
        )

    def _entry(
        self, node: str, physical: PciFunction, functions: dict[str, PciFunction]
    ) -> HardwareEntry:
        virtual = [functions[a] for a in physical.virtfns if a in functions]
        siblings = _siblings(physical, functions) if self.kind is Kind.FPGA else []
        sriov = None
        if physical.sriov_total_vfs:
            sriov = SriovFacts(
                total_vfs=physical.sriov_total_vfs, num_vfs=physical.sriov_num_vfs or 0
            )
        fpga = kind_facts.fpga_facts(physical) if self.kind is Kind.FPGA else None
        setup_required = (
            (self.kind in SETUP_BY_VFS and sriov is not None and not virtual)
            # An FPGA whose regions sysfs shows, but with no function loaded in them.
            or (fpga is not None and not fpga.afu_ids)
        )
        num = len(virtual) or 1
        capability: dict[str, object] = {"num": num}
        qat = kind_facts.qat_facts(physical) if self.kind is Kind.QAT else None
        if qat is not None and qat.services:
            capability["services"] = qat.services
        gpu = None
        if self.kind is Kind.GPU and self.nvml and physical.identity.vendor_id == NVIDIA:
            gpu = NvidiaFacts(self.nvml).facts(physical.address)
        return HardwareEntry(
            uuid=hardware_uuid(node, physical),
            acc_specs=AccSpecs(remote=0, num=num, device_type=self.kind, acc_capability=capability),
            acc_status=AccStatus(setup_required=setup_required, reboot_required=False),
            pci=self._facts(physical),
            sriov=sriov,
            virtual_functions=[self._facts(f) for f in virtual],
            sibling_functions=[self._facts(f) for f in siblings],
            mdev_types=list(physical.mdev_types),
            gpu=gpu,
            qat=qat,
            fpga=fpga,
            network=kind_facts.network_facts(physical) if self.kind is Kind.NIC else None,
        )


def _slot(address: str) -> str:
    return address.rsplit(".", 1)[0]


def _heads(kind: Kind, functions: dict[str, PciFunction]) -> list[PciFunction]:
    """The functions that head an entry of their own."""
    heads = []
    seen_slots: set[str] = set()
    for function in functions.values():
        # A VF whose PF we can see is part of that PF's entry; one whose PF is
        # hidden (a VF passed through to a guest) stands on its own.
        if function.physfn is not None and function.physfn in functions:
            continue
        if kind is Kind.FPGA:
            if _slot(function.address) in seen_slots:
                continue
            seen_slots.add(_slot(function.address))
        heads.append(function)
    return heads


def _siblings(head: PciFunction, functions: dict[str, PciFunction]) -> list[PciFunction]:
    return [
        f
        for f in functions.values()
        if f is not head and f.physfn is None and _slot(f.address) == _slot(head.address)
    ]


def discover(
    kind: Kind, sysfs_root: Path, node: str, device_filter: DeviceFilter = EVERYTHING
) -> list[HardwareEntry]:
    return Discoverer(kind, sysfs_root, device_filter).discover(node)


def count_accelerators(sysfs_root: Path, kinds: Sequence[Kind] = tuple(Kind)) -> dict[Kind, int]:
    """How many devices of each kind a tree holds (``accel up`` picks its tree by it)."""
    return {kind: len(discover(kind, sysfs_root, "probe")) for kind in kinds}
