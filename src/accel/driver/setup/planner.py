"""From a setup call to a checked plan: which device, which action, is it allowed here.

The device must be one this driver discovered (404 otherwise): the head function of
a hardware entry, or for an FPGA card one of its sibling functions (Alveo cards are
programmed through their management function). A virtual function is refused: its
physical function is what gets set up. Each action then checks what it needs.
"""

from __future__ import annotations

from collections.abc import Sequence

from accel.driver.discovery import Discoverer
from accel.driver.setup.common import Plan, SetupConfig
from accel.driver.setup.fpga import plan_program
from accel.driver.setup.mig import plan_mig_instance, plan_mig_mode
from accel.driver.setup.sriov import plan_enable_vfs
from accel.errors import InvalidInput, NotFound
from accel.internal.schemas import HardwareEntry, Kind, PciFunctionFacts
from accel.internal.setup_schemas import (
    CreateMigInstance,
    EnableVfs,
    ProgramFpga,
    SetMigMode,
    SetupCall,
)

NVIDIA_VENDOR_ID = "10de"


def target_function(entries: Sequence[HardwareEntry], address: str, kind: Kind) -> PciFunctionFacts:
    """The discovered function at ``address`` that setup may act on."""
    for entry in entries:
        if entry.pci is not None and entry.pci.address == address:
            return entry.pci
        for sibling in entry.sibling_functions:
            if sibling.address == address:
                return sibling
        for virtual in entry.virtual_functions:
            if virtual.address == address:
                head = entry.pci.address if entry.pci else "its physical function"
                raise InvalidInput(
                    f"{address} is a virtual function of {head}: set up the physical function"
                )
    raise NotFound(f"{address} is not {kind.value} hardware this driver discovers")


def plan_setup(
    call: SetupCall,
    discoverer: Discoverer,
    config: SetupConfig,
    entries: Sequence[HardwareEntry],
) -> Plan:
    """The plan for ``call``; NotFound or InvalidInput when it cannot be done here.

    Reads sysfs and asks NVML, so it blocks: the service calls it in a worker thread.
    """
    kind = discoverer.kind
    if call.kind is not kind:
        raise InvalidInput(f"this driver sets up {kind.value} hardware, not {call.kind.value}")
    function = target_function(entries, call.address, kind)
    setup = call.setup
    if isinstance(setup, EnableVfs):
        return plan_enable_vfs(discoverer.sysfs_root, call.address, setup, config)
    if isinstance(setup, ProgramFpga):
        if kind is not Kind.FPGA:
            raise InvalidInput(f"programming a bitstream is for FPGAs, not {kind.value} hardware")
        return plan_program(call.address, setup, config)
    if kind is not Kind.GPU:
        raise InvalidInput(f"MIG is for NVIDIA GPUs, not {kind.value} hardware")
    if function.vendor_id != NVIDIA_VENDOR_ID:
        raise InvalidInput(f"MIG is for NVIDIA GPUs: {call.address} is not one")
    nvml = discoverer.nvml
    if nvml is None:
        raise InvalidInput(
            "NVML is not available to this driver (it needs the nvidia-ml-py package, "
            "NVIDIA's kernel driver, and --nvml): MIG cannot be set up on this node"
        )
    if isinstance(setup, SetMigMode):
        return plan_mig_mode(nvml, call.address, setup)
    assert isinstance(setup, CreateMigInstance)
    return plan_mig_instance(nvml, call.address, setup)
