"""Intel QAT evidence: ``qat/state``, the RAS counters (``qat_ras/errors_*``, kernel
6.7+) and the firmware heartbeat in debugfs, which the driver never polls by itself
(``/sys/kernel/debug/qat_<name>_<BDF>/heartbeat/status``: 0 alive, -1 unresponsive).
debugfs needs root and a mount; where it is absent the heartbeat is simply unread."""

from __future__ import annotations

import glob

from accel.driver.health.evidence import Absent, Counters, Reading, read_number, unread

RAS_CHECKS = {
    "qat_ras_fatal": "errors_fatal",
    "qat_ras_nonfatal": "errors_nonfatal",
    "qat_ras_correctable": "errors_correctable",
}
QAT_CHECKS = ("qat_state", "qat_heartbeat", *RAS_CHECKS)


def heartbeat_path(sysfs_root: str, address: str, absent: Absent | None = None) -> str | None:
    found = (absent or Absent()).glob(f"{sysfs_root}/sys/kernel/debug/qat_*_{glob.escape(address)}")
    return f"{sorted(found)[0]}/heartbeat/status" if found else None


def qat_readings(
    sysfs_root: str,
    address: str,
    directory: str,
    counters: Counters,
    correctable_limit: int,
    absent: Absent | None = None,
) -> list[Reading]:
    absent = absent or Absent()
    readings = []
    state = absent.text(f"{directory}/qat/state")
    readings.append(
        unread("qat_state") if state is None else Reading("qat_state", state != "up", state)
    )
    # The driver makes these as the device comes up and removes them as it goes down.
    made_up = absent.in_state("qat/state", state)
    path = heartbeat_path(sysfs_root, address, made_up)
    status = None if path is None else read_number(path, made_up)
    if status is None:
        readings.append(unread("qat_heartbeat"))
    else:
        alive = status == 0
        readings.append(
            Reading("qat_heartbeat", not alive, "alive" if alive else f"unresponsive ({status})")
        )
    for check, name in RAS_CHECKS.items():
        count = read_number(f"{directory}/qat_ras/{name}", made_up)
        if count is None:
            readings.append(unread(check))
            continue
        step = counters.delta(f"{directory}/qat_ras/{name}", count)
        limit = correctable_limit if check == "qat_ras_correctable" else 1
        readings.append(Reading(check, step >= limit, f"+{step}", new=step >= limit))
    return readings
