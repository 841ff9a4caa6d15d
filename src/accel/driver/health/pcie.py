"""Vendor-neutral evidence any PCI function shows on the host, bound to vfio-pci or not:
AER counters (its own and its upstream bridge's), link width and speed against their
maximum, and whether its config space still answers."""

from __future__ import annotations

import os
import re
from collections.abc import MutableMapping
from dataclasses import dataclass, field

from accel.driver.health.evidence import (
    Absent,
    Counters,
    Reading,
    first_bytes,
    read_counter_lines,
    rises,
    unread,
)

_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")

# check -> (the device's file, the kernel's total line in it)
AER_FILES = {
    "aer_fatal": ("aer_dev_fatal", "TOTAL_ERR_FATAL"),
    "aer_nonfatal": ("aer_dev_nonfatal", "TOTAL_ERR_NONFATAL"),
    "aer_correctable": ("aer_dev_correctable", "TOTAL_ERR_COR"),
}
AER_CHECKS = tuple(AER_FILES)
LINK_CHECKS = ("link_down", "link_width", "link_speed")
CONFIG_CHECK = "config_space"


@dataclass(frozen=True, slots=True)
class AerStep:
    """How much one function's AER file grew this poll, and which rows grew."""

    total: int
    rows: dict[str, int]

    def describe(self) -> str:
        named = ", ".join(f"{name} +{count}" for name, count in sorted(self.rows.items()))
        return f"+{self.total}" + (f" ({named})" if named else "")


@dataclass
class BridgeSteps:
    """Each upstream bridge's AER steps, read once per poll however many devices sit
    below it, so every device below sees the same step."""

    counters: Counters
    steps: dict[tuple[str, str], AerStep | None] = field(default_factory=dict)
    # A function's place in the tree is fixed while it exists, so a monitor passes
    # the same mapping to every poll and resolves each path once (a realpath is a
    # readlink per component); it drops a vanished function's entry.
    parents: MutableMapping[str, str | None] = field(default_factory=dict)

    def bridge_of(self, directory: str) -> str | None:
        if directory not in self.parents:
            self.parents[directory] = upstream_bridge(directory)
        return self.parents[directory]

    def step(self, bridge_dir: str, check: str) -> AerStep | None:
        key = (bridge_dir, check)
        if key not in self.steps:
            self.steps[key] = aer_step(bridge_dir, check, self.counters)
        return self.steps[key]


def aer_step(
    directory: str, check: str, counters: Counters, absent: Absent | None = None
) -> AerStep | None:
    name, total_line = AER_FILES[check]
    rows = read_counter_lines(f"{directory}/{name}", absent)
    if rows is None:
        return None
    total = rows.pop(total_line, None)
    # One message may carry several errors, so the total is the kernel's own line
    # where it has one, not the sum of the rows.
    total = sum(rows.values()) if total is None else total
    grown = rises(rows, counters, f"{directory}/{name}")
    return AerStep(counters.delta(f"{directory}/{name}", total), grown)


def upstream_bridge(directory: str) -> str | None:
    """The bridge (root or switch port) a function hangs from, where sysfs shows one."""
    parent = os.path.dirname(os.path.realpath(directory))
    return parent if _ADDRESS.match(os.path.basename(parent)) else None


def aer_readings(
    directory: str,
    counters: Counters,
    bridges: BridgeSteps | None,
    correctable_limit: int,
    absent: Absent | None = None,
) -> list[Reading]:
    """The three AER checks; the upstream bridge's counts are the device's too, since
    errors on a link may be counted at the link partner only (a VF, which shares its
    PF's link, passes no ``bridges``). ``absent``: the function's files found missing."""
    bridge = bridges.bridge_of(directory) if bridges is not None else None
    readings = []
    for check in AER_CHECKS:
        own = aer_step(directory, check, counters, absent)
        seen = bridges.step(bridge, check) if bridges is not None and bridge else None
        if own is None and seen is None:
            readings.append(unread(check))
            continue
        total = (own.total if own else 0) + (seen.total if seen else 0)
        parts = []
        if own and own.total:
            parts.append(own.describe())
        if seen and seen.total:
            parts.append(f"{seen.describe()} at upstream {os.path.basename(bridge or '')}")
        limit = correctable_limit if check == "aer_correctable" else 1
        readings.append(
            Reading(check, total >= limit, "; ".join(parts) or "+0", new=total >= limit)
        )
    return readings


def _speed(text: str) -> float | None:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def link_readings(
    directory: str,
    maxima: MutableMapping[str, tuple[str, str]] | None = None,
    absent: Absent | None = None,
) -> list[Reading]:
    """Link down, width and speed against their maximum (a physical function's link).

    The maximum is the function's capability, fixed while it exists: with ``maxima``
    (kept by the caller across polls, dropped when the function vanishes) it is read
    once, once both files answer."""
    read_text = (absent or Absent()).text
    current_speed = read_text(f"{directory}/current_link_speed")
    current_width = read_text(f"{directory}/current_link_width")
    known = maxima.get(directory) if maxima is not None else None
    max_speed: str | None
    max_width: str | None
    if known is not None:
        max_speed, max_width = known
    else:
        max_speed = read_text(f"{directory}/max_link_speed")
        max_width = read_text(f"{directory}/max_link_width")
        if maxima is not None and max_speed is not None and max_width is not None:
            maxima[directory] = (max_speed, max_width)
    if current_speed is None or current_width is None:
        return [unread(check) for check in LINK_CHECKS]
    down = current_speed == "Unknown" or current_width == "0"
    readings = [Reading("link_down", down, "down" if down else "up")]
    if down or max_width is None or not (current_width.isdigit() and max_width.isdigit()):
        readings.append(unread("link_width"))
    else:
        narrow = int(current_width) < int(max_width)
        readings.append(Reading("link_width", narrow, f"x{current_width} of x{max_width}"))
    now, top = _speed(current_speed), _speed(max_speed or "")
    if down or now is None or top is None:
        readings.append(unread("link_speed"))
    else:
        readings.append(Reading("link_speed", now < top, f"{current_speed} of {max_speed}"))
    return readings


def config_reading(directory: str, absent: Absent | None = None) -> Reading:
    """A function that no longer answers config reads returns all ones: vendor ffff."""
    vendor = first_bytes(f"{directory}/config", 2, absent)
    if vendor is None or len(vendor) < 2:
        return unread(CONFIG_CHECK)
    if vendor == b"\xff\xff":
        return Reading(CONFIG_CHECK, True, "vendor id ffff: config space does not answer")
    return Reading(CONFIG_CHECK, False, "answers")
