"""What ``nvidia-smi -q -x`` says of each GPU's health, in the terms of accel's NVML
checks (src/accel/driver/health/gpu.py): the volatile uncorrected ECC count, pages
or rows pending, a failed row remap, the temperature and its slowdown threshold,
and the recovery action where the driver shows one. ``None``: not shown (``N/A``,
or a driver or GPU without it)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass

from tests.hardware.nvidia_smi import _text, sysfs_address


@dataclass(frozen=True)
class SmiHealth:
    address: str
    ecc_enabled: bool | None
    ecc_uncorrected: int | None
    pages_pending: bool | None
    rows_pending: bool | None
    row_remap_failure: bool | None
    temperature: int | None
    slowdown: int | None
    recovery_action: str | None


def _number(text: str | None, unit: str = "") -> int | None:
    if text is None:
        return None
    digits = text.removesuffix(unit).strip()
    return int(digits) if digits.isdigit() else None


def _yes(text: str | None) -> bool | None:
    return None if text is None else text.strip().lower() == "yes"


def _uncorrected(gpu: ElementTree.Element) -> int | None:
    """NVML's total of volatile uncorrected errors: double-bit errors on older GPUs,
    DRAM plus SRAM uncorrectable ones from Hopper's layout on."""
    volatile = "ecc_errors/volatile"
    older = _number(_text(gpu, f"{volatile}/double_bit/total"))
    if older is not None:
        return older
    dram = _number(_text(gpu, f"{volatile}/dram_uncorrectable"))
    sram = _number(_text(gpu, f"{volatile}/sram_uncorrectable"))
    if sram is None:
        split = [
            _number(_text(gpu, f"{volatile}/sram_uncorrectable_{kind}"))
            for kind in ("parity", "secded")
        ]
        sram = None if None in split else sum(n or 0 for n in split)
    return None if dram is None and sram is None else (dram or 0) + (sram or 0)


def parse_health(document: str) -> dict[str, SmiHealth]:
    """Each GPU's health evidence by its sysfs address."""
    found = {}
    for gpu in ElementTree.fromstring(document).iter("gpu"):
        address = sysfs_address(_text(gpu, "pci/pci_bus_id") or gpu.attrib["id"])
        ecc = _text(gpu, "ecc_mode/current_ecc")
        pages = _text(gpu, "retired_pages/pending_blacklist") or _text(
            gpu, "retired_pages/pending_retirement"
        )
        action = _text(gpu, "gpu_recovery_action")
        found[address] = SmiHealth(
            address=address,
            ecc_enabled=None if ecc is None else ecc.lower() == "enabled",
            ecc_uncorrected=_uncorrected(gpu),
            pages_pending=_yes(pages),
            rows_pending=_yes(_text(gpu, "remapped_rows/remapped_row_pending")),
            row_remap_failure=_yes(_text(gpu, "remapped_rows/remapped_row_failure")),
            temperature=_number(_text(gpu, "temperature/gpu_temp"), "C"),
            slowdown=_number(_text(gpu, "temperature/gpu_temp_slow_threshold"), "C"),
            recovery_action=None if action is None else action.lower(),
        )
    return found
