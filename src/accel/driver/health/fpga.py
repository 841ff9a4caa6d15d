"""DFL FPGA evidence: the FME's and ports' ``errors/*`` files (hex, ``0x0`` is clean)
and the FME's hwmon alarms, under the card's PCI function as Linux lays them out
(``fpga_region/region*/dfl-fme.N/...``, ``.../dfl-port.N/errors/errors``)."""

from __future__ import annotations

import glob

from accel.driver.health.evidence import Reading, read_number, unread

FPGA_CHECKS = ("fpga_catfatal", "fpga_errors", "fpga_thermal", "fpga_power")
_FME = "fpga_region/region*/dfl-fme.*"
_PORT = "fpga_region/region*/dfl-port.*"
# Errors that leave the card usable, if not trustworthy; catfatal_errors is its own check.
_ERROR_FILES = ("nonfatal_errors", "pcie0_errors", "pcie1_errors", "fme_errors")


def _flagged(paths: list[str]) -> tuple[bool | None, str]:
    """Whether any of the files reads non-zero, and which, or None if none reads."""
    read = False
    flagged = []
    for path in paths:
        value = read_number(path)
        if value is None:
            continue
        read = True
        if value:
            flagged.append(f"{path.rsplit('/', 2)[-2]}/{path.rsplit('/', 1)[-1]}={value:#x}")
    if not read:
        return None, ""
    return bool(flagged), ", ".join(flagged) or "clean"


def _alarms(directory: str, sensor: str) -> tuple[bool | None, str]:
    paths = []
    for level in ("max", "crit"):
        paths += glob.glob(f"{directory}/{_FME}/hwmon/hwmon*/{sensor}1_{level}_alarm")
    return _flagged(sorted(paths))


def fpga_readings(directory: str) -> list[Reading]:
    readings = []
    checks = {
        "fpga_catfatal": _flagged(sorted(glob.glob(f"{directory}/{_FME}/errors/catfatal_errors"))),
        "fpga_errors": _flagged(
            [
                *(p for n in _ERROR_FILES for p in glob.glob(f"{directory}/{_FME}/errors/{n}")),
                *sorted(glob.glob(f"{directory}/{_PORT}/errors/errors")),
            ]
        ),
        "fpga_thermal": _alarms(directory, "temp"),
        "fpga_power": _alarms(directory, "power"),
    }
    for check, (bad, value) in checks.items():
        readings.append(unread(check) if bad is None else Reading(check, bad, value))
    return readings
