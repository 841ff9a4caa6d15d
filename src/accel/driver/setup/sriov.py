"""SR-IOV: set a physical function's number of virtual functions, optionally bound to vfio-pci.

Everything goes through the PF's sysfs files, as an operator would with ``echo``:

* ``sriov_numvfs``: the kernel refuses to change a non-zero count to another
  non-zero count (EBUSY), so a change writes ``0`` first, then the new count.
  Asking for the count already set changes nothing.
* binding to vfio-pci, per VF (the PF's ``virtfnN`` links): ``driver_override``
  says which driver may take it, ``driver/unbind`` releases it from the one it
  has, and ``drivers_probe`` asks the kernel to bind it again, now to vfio-pci.

The request is checked against ``sriov_totalvfs`` before anything is written: a
function without that file cannot make VFs at all.
"""

from __future__ import annotations

import os
from pathlib import Path

import anyio.to_thread

from accel.driver.pci import PCI_DEVICES, link_name, read_int
from accel.driver.setup.common import (
    Plan,
    Progress,
    SetupConfig,
    SetupFailed,
    describe_os_error,
)
from accel.errors import InvalidInput
from accel.internal.setup_schemas import EnableVfs

VFIO = "vfio-pci"


def _device(sysfs_root: Path, address: str) -> str:
    return os.path.join(sysfs_root, PCI_DEVICES, address)


def _virtual_functions(device: str, count: int) -> list[str | None]:
    """The addresses behind ``virtfn0`` .. ``virtfn{count-1}``, None where a link is missing."""
    return [link_name(f"{device}/virtfn{index}") for index in range(count)]


def plan_enable_vfs(
    sysfs_root: Path, address: str, request: EnableVfs, config: SetupConfig
) -> Plan:
    """Checks the request against the function's SR-IOV limits; InvalidInput if it cannot be."""
    device = _device(sysfs_root, address)
    total = read_int(f"{device}/sriov_totalvfs", 10)
    if total is None:
        raise InvalidInput(f"{address} has no sriov_totalvfs: it cannot make virtual functions")
    if request.num_vfs > total:
        raise InvalidInput(
            f"{address} supports at most {total} virtual functions "
            f"(sriov_totalvfs), not {request.num_vfs}"
        )
    current = read_int(f"{device}/sriov_numvfs", 10)
    if current is None:
        raise InvalidInput(f"{address} has no readable sriov_numvfs")
    wanted = request.num_vfs
    numvfs = f"{device}/sriov_numvfs"
    probe = os.path.join(sysfs_root, "sys/bus/pci/drivers_probe")

    steps: list[str] = []
    if current == wanted:
        steps.append(_unchanged(address, wanted))
    else:
        if current != 0:
            steps.append(f"write 0 to {numvfs}")
        if wanted != 0:
            steps.append(f"write {wanted} to {numvfs}")
    if request.bind_vfio and wanted > 0:
        if current == wanted:
            # The VFs exist already: say exactly what each one needs.
            for vf in _virtual_functions(device, wanted):
                if vf is not None:
                    steps.extend(_binding_steps(sysfs_root, vf, probe))
        else:
            steps.append(
                f"for each of the {wanted} new virtual functions: write {VFIO} to its "
                f"driver_override, write its address to its driver's unbind, "
                f"write its address to {probe}"
            )

    async def run(progress: Progress) -> None:
        # Writes to sriov_numvfs block while the kernel probes the VFs: off the loop.
        await anyio.to_thread.run_sync(
            _apply, sysfs_root, device, current, request, config, progress
        )

    return Plan(steps, run, changes=current != wanted or request.bind_vfio)


def _unchanged(address: str, count: int) -> str:
    return f"sriov_numvfs of {address} is already {count}: nothing to change"


def _binding_steps(sysfs_root: Path, vf: str, probe: str) -> list[str]:
    vf_dir = _device(sysfs_root, vf)
    driver = link_name(f"{vf_dir}/driver")
    steps = [f"write {VFIO} to {vf_dir}/driver_override"]
    if driver == VFIO:
        steps.append(f"{vf} is already bound to {VFIO}")
        return steps
    if driver is not None:
        steps.append(f"write {vf} to {vf_dir}/driver/unbind")
    steps.append(f"write {vf} to {probe}")
    return steps


def _write(config: SetupConfig, progress: Progress, path: str, value: str) -> None:
    try:
        config.write(path, value)
    except OSError as exc:
        raise SetupFailed(f"writing {value} to {path} failed: {describe_os_error(exc)}") from exc
    progress.done(f"write {value} to {path}")


def _apply(
    sysfs_root: Path,
    device: str,
    current: int,
    request: EnableVfs,
    config: SetupConfig,
    progress: Progress,
) -> None:
    wanted = request.num_vfs
    numvfs = f"{device}/sriov_numvfs"
    if current == wanted:
        progress.done(_unchanged(os.path.basename(device), wanted))
    else:
        if current != 0:
            _write(config, progress, numvfs, "0")
        if wanted != 0:
            _write(config, progress, numvfs, str(wanted))
    if not request.bind_vfio or wanted == 0:
        return
    probe = os.path.join(sysfs_root, "sys/bus/pci/drivers_probe")
    # The kernel makes the virtfn links before the write to sriov_numvfs returns.
    for index, vf in enumerate(_virtual_functions(device, wanted)):
        if vf is None:
            raise SetupFailed(f"{device} has no virtfn{index} after setting {wanted} VFs")
        vf_dir = _device(sysfs_root, vf)
        _write(config, progress, f"{vf_dir}/driver_override", VFIO)
        driver = link_name(f"{vf_dir}/driver")
        if driver == VFIO:
            # Unbinding would yank the VF from whoever uses it, for nothing.
            progress.done(f"{vf} is already bound to {VFIO}")
            continue
        if driver is not None:
            _write(config, progress, f"{vf_dir}/driver/unbind", vf)
        _write(config, progress, probe, vf)
