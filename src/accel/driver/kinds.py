"""Which PCI functions belong to which kind of hardware, by class, vendor and device id.

Numbers come from the PCI class list and the vendors' kernel drivers (see
docs/discovery.md). Functions are matched on numbers only, never on names, because
the name database on a server is often older than its hardware.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from accel.driver.pci import PciFunction, PciIdentity
from accel.internal.schemas import Kind

NVIDIA, AMD_ATI, INTEL = 0x10DE, 0x1002, 0x8086
XILINX, ALTERA = 0x10EE, 0x1172
HABANA, HUAWEI, AMAZON, TENSTORRENT = 0x1DA3, 0x19E5, 0x1D0F, 0x1E52

DISPLAY_CLASS = 0x03
NETWORK_CLASS = 0x02
PROCESSING_ACCELERATOR_CLASS = 0x12

GPU_VENDORS = frozenset({NVIDIA, AMD_ATI, INTEL})

# Intel QuickAssist: physical function -> its virtual function (kernel adf_accel_devices.h).
QAT_PF_TO_VF = {
    0x0435: 0x0443,  # DH895xCC
    0x37C8: 0x37C9,  # C62x
    0x19E2: 0x19E3,  # C3xxx
    0x18EE: 0x18EF,  # 200xx
    0x6F54: 0x6F55,  # D15xx
    0x18A0: 0x18A1,  # C4xxx
    0x4940: 0x4941,  # 4xxx
    0x4942: 0x4943,  # 401xx
    0x4944: 0x4945,  # 402xx
    0x4946: 0x4947,  # 420xx
    0x4948: 0x4949,  # 6xxx
}
QAT_IDS = frozenset(QAT_PF_TO_VF) | frozenset(QAT_PF_TO_VF.values())

# Intel FPGA cards (PAC Arria 10, PAC D5005, N3000, Agilex), physical and virtual functions.
INTEL_FPGA_IDS = frozenset({0x09C4, 0x09C5, 0x0B2B, 0x0B2C, 0x0B30, 0x0B32, 0xBCCE, 0xBCCF})
# Xilinx/AMD Alveo and Altera functions show up as processing accelerators or as
# "memory controller, other" (class 0x0580) depending on the shell.
FPGA_VENDOR_CLASSES = frozenset({0x1200, 0x0580, 0x1180, 0xFF00})

HUAWEI_ASCEND_IDS = frozenset({0xD100, 0xD500, 0xD801, 0xD802, 0xD803})
AI_VENDORS = frozenset({HABANA, AMAZON, TENSTORRENT})


def is_gpu(identity: PciIdentity) -> bool:
    return identity.base_class == DISPLAY_CLASS and identity.vendor_id in GPU_VENDORS


def is_fpga(identity: PciIdentity) -> bool:
    if identity.vendor_id == INTEL:
        return identity.device_id in INTEL_FPGA_IDS
    return identity.vendor_id in (XILINX, ALTERA) and identity.class_prefix in FPGA_VENDOR_CLASSES


def is_qat(identity: PciIdentity) -> bool:
    return identity.vendor_id == INTEL and identity.device_id in QAT_IDS


def is_aichip(identity: PciIdentity) -> bool:
    if identity.vendor_id == HUAWEI:
        return identity.device_id in HUAWEI_ASCEND_IDS
    if is_fpga(identity) or is_qat(identity):
        return False
    if identity.vendor_id in AI_VENDORS:
        # Some AI cards call themselves co-processors or signal processors.
        return identity.base_class in (0x0B, 0x11, PROCESSING_ACCELERATOR_CLASS, 0xFF)
    return identity.base_class == PROCESSING_ACCELERATOR_CLASS


def is_network(identity: PciIdentity) -> bool:
    return identity.base_class == NETWORK_CLASS


@dataclass(frozen=True)
class KindRule:
    """How one kind picks its functions: a cheap test on the identity, then the facts."""

    candidate: Callable[[PciIdentity], bool]
    member: Callable[[PciFunction], bool] = lambda function: True


def _sriov_capable(function: PciFunction) -> bool:
    # A VF of a NIC joins its PF; a PF counts only if it can make VFs at all.
    return function.physfn is not None or (function.sriov_total_vfs or 0) > 0


RULES: dict[Kind, KindRule] = {
    Kind.GPU: KindRule(is_gpu),
    Kind.FPGA: KindRule(is_fpga),
    Kind.QAT: KindRule(is_qat),
    Kind.NIC: KindRule(is_network, _sriov_capable),
    Kind.AICHIP: KindRule(is_aichip),
}
