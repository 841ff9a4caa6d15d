"""How one hardware entry becomes a device row and its deployables.

Deployables follow OpenStack Cyborg's drivers: a device without VFs is one
deployable, attached by its own PCI address; a physical function with VFs offers
one deployable per VF, since each VF is what a workload gets; a GPU that offers
mediated-device types offers one VGPU deployable per type. Each
deployable's resource-provider uuid is derived from its name exactly as Cyborg does
(uuid3 in the DNS namespace), so a Placement tree built from either agrees.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from accel.db.models import AttachHandle, Attribute, Deployable, Device
from accel.internal.schemas import HardwareEntry, HardwareList, Kind, PciFunctionFacts

RESOURCE_CLASSES = {
    Kind.GPU: "PGPU",
    Kind.FPGA: "FPGA",
    Kind.QAT: "CUSTOM_QAT",
    Kind.NIC: "CUSTOM_NIC",
    Kind.AICHIP: "CUSTOM_AICHIP",
}
VENDOR_TRAIT_NAMES = {
    "10de": "NVIDIA",
    "1002": "AMD",
    "8086": "INTEL",
    "10ee": "XILINX",
    "1172": "INTEL",
    "1da3": "HABANA",
    "19e5": "HUAWEI",
    "1d0f": "AMAZON",
    "1e52": "TENSTORRENT",
    "15b3": "MELLANOX",
}
CLASS_NAMES = {
    "0300": "VGA compatible controller",
    "0302": "3D controller",
    "0380": "Display controller",
    "0b40": "Co-processor",
    "1200": "Processing accelerators",
    "0200": "Ethernet controller",
    "0207": "Infiniband controller",
    "0280": "Network controller",
    "0580": "Memory controller",
}


@dataclass(frozen=True)
class DeployablePlan:
    """A deployable as discovery says it should be."""

    name: str
    num_accelerators: int
    driver_name: str | None
    attributes: tuple[tuple[str, str], ...]
    attach_handles: tuple[tuple[str, str], ...]

    @property
    def rp_uuid(self) -> str:
        return str(uuid.uuid3(uuid.NAMESPACE_DNS, self.name))


def fingerprint(entry: HardwareEntry) -> str:
    """Changes exactly when anything the driver reported about the device changes."""
    return hashlib.sha256(canonical_json(entry).encode()).hexdigest()


def canonical_json(entry: HardwareEntry) -> str:
    return json.dumps(entry.model_dump(mode="json", exclude_none=True), sort_keys=True)


def device_columns(entry: HardwareEntry, hostname: str) -> dict[str, Any]:
    """The device row's columns for ``entry`` (everything but identity and history)."""
    pci = entry.pci
    std_board_info: dict[str, Any] = {}
    vendor_board_info: dict[str, Any] = {}
    if pci is not None:
        std_board_info = {
            "product_id": pci.product_id,
            "controller": CLASS_NAMES.get(pci.class_code[:4], f"class {pci.class_code}"),
        }
        vendor_board_info = {
            key: value
            for key, value in {
                "subsystem_vendor_id": pci.subsystem_vendor_id,
                "subsystem_product_id": pci.subsystem_product_id,
                "revision": pci.revision,
                "numa_node": pci.numa_node,
                "driver": pci.driver,
            }.items()
            if value is not None
        }
    hardware = canonical_json(entry)
    return {
        "type": entry.acc_specs.device_type.value,
        "vendor": pci.vendor_id if pci else "unknown",
        "model": pci.product_id if pci else entry.acc_specs.device_type.value,
        "std_board_info": json.dumps(std_board_info, sort_keys=True),
        "vendor_board_info": json.dumps(vendor_board_info, sort_keys=True),
        "hostname": hostname,
        "pci_address": pci.address if pci else None,
        "setup_required": entry.acc_status.setup_required,
        "reboot_required": entry.acc_status.reboot_required,
        "hardware": hardware,
        "fingerprint": hashlib.sha256(hardware.encode()).hexdigest(),
    }


def pci_attach_info(function: PciFunctionFacts) -> str:
    domain, bus, slot = function.address.split(":")
    device, _, number = slot.partition(".")
    return json.dumps(
        {"domain": domain, "bus": bus, "device": device, "function": number}, sort_keys=True
    )


def plan_deployables(entry: HardwareEntry, hostname: str) -> list[DeployablePlan]:
    kind = entry.acc_specs.device_type
    pci = entry.pci
    if pci is None:
        # An internal-API 1.0 driver says how many, but not where.
        return [
            DeployablePlan(
                f"{hostname}_{entry.uuid}",
                entry.acc_specs.num,
                None,
                (("rc", RESOURCE_CLASSES[kind]),),
                (),
            )
        ]
    vendor = VENDOR_TRAIT_NAMES.get(pci.vendor_id, f"VENDOR_{pci.vendor_id.upper()}")
    driver_name = vendor.lower()
    if kind is Kind.GPU and entry.mdev_types:
        return _vgpu_deployables(entry, pci, hostname, vendor)
    if entry.virtual_functions:
        return [
            DeployablePlan(
                f"{hostname}_{vf.address}",
                1,
                driver_name,
                _attributes(kind, vendor, vf, virtual=True),
                (("PCI", pci_attach_info(vf)),),
            )
            for vf in entry.virtual_functions
        ]
    functions = entry.virtual_functions or [pci]
    return [
        DeployablePlan(
            f"{hostname}_{pci.address}",
            len(functions),
            driver_name,
            _attributes(kind, vendor, pci, virtual=False),
            tuple(("PCI", pci_attach_info(function)) for function in functions),
        )
    ]


def _vgpu_deployables(
    entry: HardwareEntry, pci: PciFunctionFacts, hostname: str, vendor: str
) -> list[DeployablePlan]:
    """A GPU shared through mediated devices: one VGPU deployable per mdev type, one
    MDEV attach handle per instance it can hold, marked as Cyborg marks them."""
    plans = []
    for mdev in entry.mdev_types:
        units = mdev.units
        if units == 0:
            continue
        traits = [f"CUSTOM_GPU_{vendor}"]
        if mdev.name and len(mdev.name.split()) > 1:
            model = re.sub(r"[^A-Za-z0-9]", "_", mdev.name.split()[1]).upper()
            traits.append(f"CUSTOM_{vendor}_{pci.product_id.upper()}_{model}")
        plans.append(
            DeployablePlan(
                f"{hostname}_{pci.address}_{mdev.type_id}",
                units,
                vendor.lower(),
                (("rc", "VGPU"), *((f"trait{i}", t) for i, t in enumerate(traits))),
                tuple(
                    ("MDEV", mdev_attach_info(pci, mdev.type_id, index)) for index in range(units)
                ),
            )
        )
    return plans


def mdev_attach_info(function: PciFunctionFacts, type_id: str, index: int) -> str:
    info = json.loads(pci_attach_info(function))
    info.update({"asked_type": type_id, "vgpu_mark": f"{type_id}_{index}"})
    return json.dumps(info, sort_keys=True)


def _attributes(
    kind: Kind, vendor: str, function: PciFunctionFacts, virtual: bool
) -> tuple[tuple[str, str], ...]:
    product = function.product_id.upper()
    traits = {
        Kind.GPU: [f"CUSTOM_GPU_{vendor}", f"CUSTOM_GPU_PRODUCT_ID_{product}"],
        Kind.FPGA: [f"CUSTOM_FPGA_{vendor}", f"CUSTOM_FPGA_PRODUCT_ID_{product}"],
        Kind.QAT: [f"CUSTOM_QAT_{vendor}", f"CUSTOM_QAT_PRODUCT_ID_{product}"],
        Kind.NIC: ["CUSTOM_VF" if virtual else "CUSTOM_PF", f"CUSTOM_NIC_{vendor}"],
        Kind.AICHIP: [f"CUSTOM_AICHIP_{vendor}", f"CUSTOM_AICHIP_PRODUCT_ID_{product}"],
    }[kind]
    return (
        ("rc", RESOURCE_CLASSES[kind]),
        *((f"trait{index}", trait) for index, trait in enumerate(traits)),
    )


def sync_deployables(device: Device, plans: Iterable[DeployablePlan], now: dt.datetime) -> None:
    """Brings a stored device's deployables to ``plans``, keeping rows whose name survives."""
    wanted = {plan.name: plan for plan in plans}
    for stale in [d for d in device.deployables if d.name not in wanted]:
        device.deployables.remove(stale)
    existing = {deployable.name: deployable for deployable in device.deployables}
    for name, plan in wanted.items():
        deployable = existing.get(name)
        if deployable is None:
            deployable = Deployable(name=name, rp_uuid=plan.rp_uuid, created_at=now)
            device.deployables.append(deployable)
        deployable.num_accelerators = plan.num_accelerators
        deployable.driver_name = plan.driver_name
        if [(a.key, a.value) for a in deployable.attributes] != list(plan.attributes):
            deployable.attributes = [
                Attribute(key=k, value=v, created_at=now) for k, v in plan.attributes
            ]
        sync_attach_handles(deployable, plan.attach_handles, now)


def sync_attach_handles(
    deployable: Deployable, wanted: tuple[tuple[str, str], ...], now: dt.datetime
) -> None:
    # Keyed by attach_info, like Cyborg: a surviving handle keeps its in_use flag.
    existing = {handle.attach_info: handle for handle in deployable.attach_handles}
    wanted_infos = {info for _, info in wanted}
    for info, stale in existing.items():
        if info not in wanted_infos:
            deployable.attach_handles.remove(stale)
    for attach_type, info in wanted:
        handle = existing.get(info)
        if handle is None:
            deployable.attach_handles.append(
                AttachHandle(
                    attach_type=attach_type, attach_info=info, in_use=False, created_at=now
                )
            )
        elif handle.attach_type != attach_type:
            handle.attach_type = attach_type


def function_named_twice(report: HardwareList) -> str | None:
    """The address of a PCI function that two entries of one kind (one driver's), or
    two of an entry's VFs, name, however it is written (the case of its hex digits,
    the domain's width); else None.

    Per kind: a function is of one kind by its class code, so two kinds at one
    address are two drivers' views of different trees, as accel's simulator gives
    every kind a tree of its own (its cards from 0000:01:00.0 on)."""
    seen: set[tuple[Kind, int, int, int, int]] = set()
    for entry in report.hardware:
        kind = entry.acc_specs.device_type
        functions = [entry.pci] if entry.pci is not None else []
        for function in (*functions, *entry.virtual_functions):
            domain, bus, rest = function.address.split(":")
            device, number = rest.split(".")
            key = (kind, int(domain, 16), int(bus, 16), int(device, 16), int(number))
            if key in seen:
                return function.address
            seen.add(key)
    return None
