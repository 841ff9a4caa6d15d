"""What a reader yields: one check's reading for one device, and the counter memory
that turns the kernel's ever-growing counters into per-poll deltas."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reading:
    """One check's reading.

    ``bad`` is None when the evidence could not be read: silence, which never counts
    as healthy nor as failed. ``new`` says the evidence moved this poll (a counter
    rose, a condition began or changed value), which is what ``last_seen`` and
    ``count`` follow, so a condition that merely persists changes nothing on the wire.
    """

    check: str
    bad: bool | None
    value: str = ""
    new: bool = False


def unread(check: str) -> Reading:
    return Reading(check, None)


class Counters:
    """The last value of every counter read, by key; not thread-safe (the monitor
    serialises polls)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def delta(self, key: str, value: int) -> int:
        """How much ``value`` grew since the last poll; the first reading is the baseline.

        A decrease means the counter was reset between polls (a device reset, a reboot,
        ``reset_error_counters``): every error it counts now came after that reset, so
        after our last poll, and all of them are new.
        """
        last = self._last.get(key)
        self._last[key] = value
        if last is None:
            return 0
        return value - last if value >= last else value

    def forget(self, prefix: str) -> None:
        """Drops a vanished device's counters, so a device that comes back re-baselines."""
        for key in [k for k in self._last if k.startswith(prefix)]:
            del self._last[key]


class FirstLook(Counters):
    """The counters as a first reading of new devices sees them: a key never read is
    baselined, one read before is left as it is, so the growth since the last poll
    (of a bridge above both a new device and known ones, or of a known PF whose VF
    is new) stays for that poll's reader to see, and is not taken by the newcomer."""

    def __init__(self, counters: Counters) -> None:
        super().__init__()
        self._last = counters._last

    def delta(self, key: str, value: int) -> int:
        self._last.setdefault(key, value)
        return 0


@dataclass
class Absent:
    """The files one function was found without, not looked for again: its attributes
    are the kernel's, made with the device, and its driver's, made when it binds (or,
    some, in one state of the device only: ``in_state``), so a monitor keeps one per
    function and driver and drops it when either goes. An idle
    node's polls spent most of their opens failing on files a function has not (a VF's
    AER counters, an older kernel's QAT RAS files: docs/benchmarks.md, issue 25). Only
    a missing file is remembered: one that fails to read (a device that stopped
    answering) is tried again at every poll."""

    paths: set[str] = field(default_factory=set)
    # Files the function's driver makes and removes in one of its states only, by what
    # the state is of: ``(the state they were found missing in, those found missing)``.
    _states: dict[str, tuple[str | None, Absent]] = field(default_factory=dict)

    def in_state(self, of: str, state: str | None) -> Absent:
        """The files found missing while ``of`` was ``state``: looked for again once it
        is another (a QAT's heartbeat and RAS counters come and go with its ``up``)."""
        known = self._states.get(of)
        if known is None or known[0] != state:
            known = self._states[of] = (state, Absent())
        return known[1]

    def bytes(self, path: str, size: int = 65536) -> bytes | None:
        """Up to ``size`` bytes of the file, or None if it is missing or unreadable."""
        if path in self.paths:
            return None
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self.paths.add(path)
            return None
        except OSError:
            return None
        try:
            return os.read(descriptor, size)
        except OSError:
            return None
        finally:
            os.close(descriptor)

    def text(self, path: str) -> str | None:
        """A sysfs attribute's text, as ``accel.driver.pci.read_text`` reads it."""
        data = self.bytes(path)
        return None if data is None else data.decode("ascii", "replace").strip()

    def glob(self, pattern: str) -> list[str]:
        """The paths matching ``pattern``; none matching is remembered as a missing file."""
        if pattern in self.paths:
            return []
        found = glob.glob(pattern)
        if not found:
            self.paths.add(pattern)
        return found


def read_counter_lines(path: str, absent: Absent | None = None) -> dict[str, int] | None:
    """The kernel's ``<name> <count>`` lines (AER, QAT RAS) as a mapping, or None."""
    text = (absent or Absent()).text(path)
    if text is None:
        return None
    rows: dict[str, int] = {}
    for line in text.splitlines():
        name, _, count = line.strip().rpartition(" ")
        if name and count.isdigit():
            rows[name] = int(count)
    return rows


def read_number(path: str, absent: Absent | None = None) -> int | None:
    """A decimal or ``0x`` hexadecimal number file, or None."""
    text = (absent or Absent()).text(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def first_bytes(path: str, size: int, absent: Absent | None = None) -> bytes | None:
    return (absent or Absent()).bytes(path, size)


def rises(rows: Mapping[str, int], counters: Counters, key: str) -> dict[str, int]:
    """The rows of a counter file that rose this poll, by name."""
    grown = {}
    for name, count in rows.items():
        step = counters.delta(f"{key}/{name}", count)
        if step:
            grown[name] = step
    return grown
