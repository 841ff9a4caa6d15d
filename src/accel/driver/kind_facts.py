"""What each kind's own sysfs files add: QAT services, FPGA regions and functions,
NIC interfaces and switchdev. Every read is tolerant; a fact not shown is absent.

FPGA paths follow both Linux's DFL driver (``fpga_region/regionN/dfl-port.M/afu_id``,
``.../compat_id``) and Intel's older OPAE driver (``fpga/intel-fpga-dev.N/...``).
"""

from __future__ import annotations

import glob

from accel.driver.pci import PciFunction, read_text
from accel.internal.schemas import FpgaFacts, NetworkFacts, QatFacts

_AFU_PATTERNS = (
    "fpga_region/region*/dfl-port.*/afu_id",
    "fpga/intel-fpga-dev.*/intel-fpga-port.*/afu_id",
)
_INTERFACE_PATTERNS = (
    "fpga_region/region*/compat_id",
    "fpga_region/region*/dfl-fme.*/dfl-fme-region.*/fpga_region/region*/compat_id",
    "fpga/intel-fpga-dev.*/intel-fpga-fme.*/pr/interface_id",
)


def qat_facts(function: PciFunction) -> QatFacts | None:
    services = read_text(f"{function.directory}/qat/cfg_services")
    state = read_text(f"{function.directory}/qat/state")
    if services is None and state is None:
        return None
    names = [s.strip() for s in (services or "").replace(",", ";").split(";") if s.strip()]
    return QatFacts(services=names, state=state)


def _read_all(directory: str, patterns: tuple[str, ...]) -> list[str]:
    found = []
    for pattern in patterns:
        for path in sorted(glob.glob(f"{directory}/{pattern}")):
            value = read_text(path)
            if value:
                found.append(value)
    return found


def _all_zero(identifier: str) -> bool:
    """An AFU id of zeros is what a port shows with no function loaded."""
    try:
        return int(identifier.replace("-", ""), 16) == 0
    except ValueError:
        return False


def fpga_facts(function: PciFunction) -> FpgaFacts | None:
    directory = function.directory
    regions = sorted(
        path.rsplit("/", 1)[1] for path in glob.glob(f"{directory}/fpga_region/region*")
    )
    afu_ids = [a for a in _read_all(directory, _AFU_PATTERNS) if not _all_zero(a)]
    interfaces = _read_all(directory, _INTERFACE_PATTERNS)
    if not regions and not afu_ids and not interfaces and not glob.glob(f"{directory}/fpga"):
        return None
    return FpgaFacts(
        interface_id=interfaces[0] if interfaces else None, afu_ids=afu_ids, regions=regions
    )


def network_facts(function: PciFunction) -> NetworkFacts | None:
    if not function.net_interfaces:
        return None
    switch_ids = [
        read_text(f"{function.directory}/net/{name}/phys_switch_id")
        for name in function.net_interfaces
    ]
    return NetworkFacts(
        interfaces=list(function.net_interfaces),
        phys_switch_id=next((s for s in switch_ids if s), None),
    )
