"""Human names for PCI ids, read from the PCI ID database (the ``pci.ids`` file).

Discovery reports functions by number (vendor ``0x10de``, device ``0x2330``, class
``0x030200``); this module turns those numbers into the names that ``lspci`` shows.
The database is a text file that Debian's ``pci.ids`` package and ``hwdata`` install;
it may be absent, so every lookup tolerates missing data and answers ``None`` for an
id it does not know. The whole file is parsed once, into dicts keyed by ints.

The format, after ``#`` comments and blank lines are dropped::

    vvvv  Vendor name
    <TAB>dddd  Device name
    <TAB><TAB>ssss ssss  Subsystem name (subvendor, subdevice)
    C cc  Class name
    <TAB>ss  Subclass name
    <TAB><TAB>pp  Programming interface name

Any other top-level line starts a section that is ignored, together with its children,
and so is a line that cannot be parsed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PATHS: tuple[Path, ...] = (
    Path("/usr/share/misc/pci.ids"),
    Path("/usr/share/hwdata/pci.ids"),
    Path("/usr/share/pci.ids"),
)

_HEX2, _HEX4, _NAME = "([0-9a-fA-F]{2})", "([0-9a-fA-F]{4})", r"[ \t]+(\S.*)"
_VENDOR = re.compile(_HEX4 + _NAME)
_DEVICE = re.compile("\t" + _HEX4 + _NAME)
_SUBSYSTEM = re.compile("\t\t" + _HEX4 + " " + _HEX4 + _NAME)
_CLASS = re.compile("C " + _HEX2 + _NAME)
_SUBCLASS = re.compile("\t" + _HEX2 + _NAME)
_PROG_IF = re.compile("\t\t" + _HEX2 + _NAME)


@dataclass(frozen=True, slots=True)
class PciNames:
    """The names of one PCI function; ``None`` where the database does not know an id."""

    vendor: str | None
    device: str | None
    subsystem: str | None
    subsystem_vendor: str | None
    class_name: str | None


class PciIdDatabase:
    """The vendor, device, subsystem and class names of one ``pci.ids`` file."""

    def __init__(self, source: Path | None = None) -> None:
        self._source = source
        self._vendors: dict[int, str] = {}
        self._devices: dict[tuple[int, int], str] = {}
        self._subsystems: dict[tuple[int, int, int, int], str] = {}
        self._classes: dict[int, str] = {}
        self._subclasses: dict[tuple[int, int], str] = {}
        self._prog_ifs: dict[tuple[int, int, int], str] = {}

    @classmethod
    def load(cls, path: Path) -> PciIdDatabase:
        """Parses the file at ``path``; raises ``OSError`` if it cannot be read."""
        database = cls(path)
        database._parse(path.read_text(encoding="utf-8", errors="replace"))
        return database

    @classmethod
    def empty(cls) -> PciIdDatabase:
        """A database that knows no names."""
        return cls()

    @classmethod
    def find(cls, paths: Sequence[Path] = DEFAULT_PATHS) -> PciIdDatabase:
        """The first readable database of ``paths``, else an empty one (never raises)."""
        for path in paths:
            try:
                return cls.load(path)
            except (OSError, ValueError):
                continue
        return cls.empty()

    @property
    def source(self) -> Path | None:
        """The file the names were read from; ``None`` for an empty database."""
        return self._source

    def names(
        self,
        vendor_id: int,
        device_id: int,
        class_code: int,
        subsystem_vendor_id: int | None = None,
        subsystem_device_id: int | None = None,
    ) -> PciNames:
        """The names of a function; ``class_code`` is the 24-bit class sysfs gives."""
        base, sub, prog_if = (class_code >> 16) & 0xFF, (class_code >> 8) & 0xFF, class_code & 0xFF
        class_name = (
            self._prog_ifs.get((base, sub, prog_if))
            or self._subclasses.get((base, sub))
            or self._classes.get(base)
        )
        subsystem = subsystem_vendor = None
        if subsystem_vendor_id is not None:
            subsystem_vendor = self._vendors.get(subsystem_vendor_id)
            if subsystem_device_id is not None:
                key = (vendor_id, device_id, subsystem_vendor_id, subsystem_device_id)
                subsystem = self._subsystems.get(key)
        return PciNames(
            vendor=self._vendors.get(vendor_id),
            device=self._devices.get((vendor_id, device_id)),
            subsystem=subsystem,
            subsystem_vendor=subsystem_vendor,
            class_name=class_name,
        )

    def _parse(self, text: str) -> None:
        top: int | None = None  # the vendor or class of the latest top-level line
        middle: int | None = None  # the device or subclass under it
        in_classes = False
        for line in text.split("\n"):
            if line[:1] != "\t":
                if not line or line[0] == "#" or line.isspace():
                    continue
                in_classes = line.startswith("C ")
                match = (_CLASS if in_classes else _VENDOR).match(line)
                top = middle = None
                if match is not None:
                    top = int(match[1], 16)
                    (self._classes if in_classes else self._vendors)[top] = match[2].rstrip()
            elif top is None:
                continue  # under an ignored section or a malformed top-level line
            elif line[1:2] != "\t":
                match = (_SUBCLASS if in_classes else _DEVICE).match(line)
                if match is not None:
                    middle = int(match[1], 16)
                    table = self._subclasses if in_classes else self._devices
                    table[(top, middle)] = match[2].rstrip()
                elif line.strip()[:1] not in ("", "#"):
                    middle = None  # a malformed line: its children belong to nothing
            elif middle is not None:
                self._parse_inner(in_classes, top, middle, line)

    def _parse_inner(self, in_classes: bool, top: int, middle: int, line: str) -> None:
        """A doubly indented line: a class's prog-if, or a subsystem of a device."""
        if in_classes:
            match = _PROG_IF.match(line)
            if match is not None:
                self._prog_ifs[(top, middle, int(match[1], 16))] = match[2].rstrip()
        else:
            match = _SUBSYSTEM.match(line)
            if match is not None:
                key = (top, middle, int(match[1], 16), int(match[2], 16))
                self._subsystems[key] = match[3].rstrip()


@functools.cache
def default_database() -> PciIdDatabase:
    """The database of the first of ``DEFAULT_PATHS`` that can be read, parsed once."""
    return PciIdDatabase.find()
