"""What a reader yields: one check's reading for one device, and the counter memory
that turns the kernel's ever-growing counters into per-poll deltas."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from accel.driver.pci import read_text


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


def read_counter_lines(path: str) -> dict[str, int] | None:
    """The kernel's ``<name> <count>`` lines (AER, QAT RAS) as a mapping, or None."""
    text = read_text(path)
    if text is None:
        return None
    rows: dict[str, int] = {}
    for line in text.splitlines():
        name, _, count = line.strip().rpartition(" ")
        if name and count.isdigit():
            rows[name] = int(count)
    return rows


def read_number(path: str) -> int | None:
    """A decimal or ``0x`` hexadecimal number file, or None."""
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def first_bytes(path: str, size: int) -> bytes | None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(descriptor, size)
    except OSError:
        return None
    finally:
        os.close(descriptor)


def rises(rows: Mapping[str, int], counters: Counters, key: str) -> dict[str, int]:
    """The rows of a counter file that rose this poll, by name."""
    grown = {}
    for name, count in rows.items():
        step = counters.delta(f"{key}/{name}", count)
        if step:
            grown[name] = step
    return grown
