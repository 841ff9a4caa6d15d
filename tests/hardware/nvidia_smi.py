"""What ``nvidia-smi -q -x`` says of each GPU, in the words of accel's discovery.

NVIDIA's own tool is the reference a GPU operator trusts, so the hardware check
compares accel's report with it field by field. Only the fields both sides know are
read; a field nvidia-smi shows as ``N/A`` or leaves out is ``None``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

# PCIe generation to the transfer rate Linux writes in ``current_link_speed``.
LINK_SPEEDS = {
    "1": "2.5 GT/s PCIe",
    "2": "5.0 GT/s PCIe",
    "3": "8.0 GT/s PCIe",
    "4": "16.0 GT/s PCIe",
    "5": "32.0 GT/s PCIe",
    "6": "64.0 GT/s PCIe",
}


@dataclass(frozen=True)
class SmiGpu:
    """One GPU as nvidia-smi reports it."""

    address: str
    name: str | None
    vendor_id: str | None
    product_id: str | None
    subsystem_vendor_id: str | None
    subsystem_product_id: str | None
    gpu_uuid: str | None
    serial: str | None
    memory_total_mib: int | None
    mig_mode: str | None
    driver_version: str | None
    max_link_speed: str | None
    max_link_width: str | None
    current_link_speed: str | None
    current_link_width: str | None


def _text(node: ElementTree.Element, path: str) -> str | None:
    found = node.find(path)
    if found is None or found.text is None:
        return None
    text = found.text.strip()
    return None if text in ("", "N/A") or text.startswith("[") else text


def _id_halves(packed: str | None) -> tuple[str | None, str | None]:
    """``233510DE`` is product 2335 of vendor 10de: nvidia-smi packs them so."""
    if packed is None or len(packed.removeprefix("0x")) != 8:
        return None, None
    digits = packed.removeprefix("0x").lower()
    return digits[:4], digits[4:]


def sysfs_address(bus_id: str) -> str:
    """nvidia-smi's 8-digit PCI domain (``00000000:18:00.0``) as sysfs writes it."""
    domain, _, rest = bus_id.lower().partition(":")
    return f"{int(domain, 16):04x}:{rest}"


def _mib(text: str | None) -> int | None:
    if text is None or not text.endswith("MiB"):
        return None
    return int(text.removesuffix("MiB").strip())


def _width(text: str | None) -> str | None:
    return None if text is None else text.removesuffix("x").strip()


def parse(document: str) -> list[SmiGpu]:
    """Every GPU in an ``nvidia-smi -q -x`` document."""
    root = ElementTree.fromstring(document)
    driver_version = _text(root, "driver_version")
    gpus = []
    for gpu in root.iter("gpu"):
        product_id, vendor_id = _id_halves(_text(gpu, "pci/pci_device_id"))
        subsystem_product_id, subsystem_vendor_id = _id_halves(_text(gpu, "pci/pci_sub_system_id"))
        link = "pci/pci_gpu_link_info"
        mig = _text(gpu, "mig_mode/current_mig")
        max_gen = _text(gpu, f"{link}/pcie_gen/max_link_gen")
        current_gen = _text(gpu, f"{link}/pcie_gen/current_link_gen")
        gpus.append(
            SmiGpu(
                address=sysfs_address(_text(gpu, "pci/pci_bus_id") or gpu.attrib["id"]),
                name=_text(gpu, "product_name"),
                vendor_id=vendor_id,
                product_id=product_id,
                subsystem_vendor_id=subsystem_vendor_id,
                subsystem_product_id=subsystem_product_id,
                gpu_uuid=_text(gpu, "uuid"),
                serial=_text(gpu, "serial"),
                memory_total_mib=_mib(_text(gpu, "fb_memory_usage/total")),
                mig_mode=None if mig is None else mig.lower(),
                driver_version=driver_version,
                max_link_speed=LINK_SPEEDS.get(max_gen or ""),
                max_link_width=_width(_text(gpu, f"{link}/link_widths/max_link_width")),
                current_link_speed=LINK_SPEEDS.get(current_gen or ""),
                current_link_width=_width(_text(gpu, f"{link}/link_widths/current_link_width")),
            )
        )
    return gpus
