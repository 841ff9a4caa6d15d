"""Which devices a driver may report: allow and deny lists, like Nova's PCI whitelist.

A spec is a comma-separated set of criteria that must all hold:

* ``VVVV:DDDD``, vendor and device ids in hex, either may be ``*``;
* ``class=CC``, ``class=CCSS`` or ``class=CCSSPP``, a prefix of the class code;
* ``address=GLOB``, the PCI address, shell-style (``0000:b1:*``).

A device is reported if it matches some allow spec (or there are none) and no deny
spec. In the config file: ``allow = ["10de:*"]`` and ``deny = ["address=0000:b1:*"]``
under ``[driver]``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from accel.driver.pci import PciIdentity

_IDS = re.compile(r"^(\*|[0-9a-fA-F]{1,4}):(\*|[0-9a-fA-F]{1,4})$")
_CLASS = re.compile(r"^(?:0x)?([0-9a-fA-F]{2}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class DeviceSpec:
    vendor_id: int | None = None
    device_id: int | None = None
    class_prefix: str | None = None
    address_glob: str | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceSpec:
        vendor = device = None
        class_prefix = address = None
        for part in (p.strip() for p in text.split(",")):
            if ids := _IDS.match(part):
                vendor = None if ids.group(1) == "*" else int(ids.group(1), 16)
                device = None if ids.group(2) == "*" else int(ids.group(2), 16)
            elif part.startswith("class="):
                match = _CLASS.match(part.removeprefix("class="))
                if match is None:
                    raise ValueError(f"{part!r}: class must be 2, 4 or 6 hex digits")
                class_prefix = match.group(1).lower()
            elif part.startswith("address="):
                address = part.removeprefix("address=").lower()
            else:
                raise ValueError(f"{part!r} is not VENDOR:DEVICE, class=CC[SS[PP]] or address=GLOB")
        return cls(vendor, device, class_prefix, address)

    def matches(self, identity: PciIdentity) -> bool:
        if self.vendor_id is not None and identity.vendor_id != self.vendor_id:
            return False
        if self.device_id is not None and identity.device_id != self.device_id:
            return False
        if self.class_prefix is not None and not (
            f"{identity.class_code:06x}".startswith(self.class_prefix)
        ):
            return False
        return self.address_glob is None or fnmatch.fnmatchcase(identity.address, self.address_glob)


@dataclass(frozen=True)
class DeviceFilter:
    allow: tuple[DeviceSpec, ...] = ()
    deny: tuple[DeviceSpec, ...] = ()

    @classmethod
    def parse(cls, allow: Sequence[str] = (), deny: Sequence[str] = ()) -> DeviceFilter:
        return cls(tuple(map(DeviceSpec.parse, allow)), tuple(map(DeviceSpec.parse, deny)))

    def admits(self, identity: PciIdentity) -> bool:
        if self.allow and not any(spec.matches(identity) for spec in self.allow):
            return False
        return not any(spec.matches(identity) for spec in self.deny)


EVERYTHING = DeviceFilter()
