"""Whether the kernel announced a change to a PCI device since the last look.

The kernel sends a uevent over a NETLINK_KOBJECT_UEVENT socket when a device is added
or removed, bound to a driver or unbound, or changes (a VF enabled, a network
interface renamed, an mdev made). This is what tells a driver reading the host's own
sysfs that its tree changed (accel.driver.change_watch): sysfs gives no inotify. Only
uevents of a device under ``/devices/pci*`` count. A fake tree's changes send none:
accel.driver.tree_watch watches those.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

log = logging.getLogger(__name__)

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # the kernel's own messages; udevd's come on group 2
MAX_DRAIN = 4096  # messages read per look; more than that counts as a change
MAX_MESSAGE = 8192  # the kernel's uevent buffer is 2 KiB


class UeventWatch:
    """The kernel's uevents, read without waiting; ``changed`` drains them."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock

    def changed(self) -> bool:
        """Whether a PCI device's uevent came since the last call (or may have: the
        socket overflowed and lost some, or it failed)."""
        seen = False
        for _ in range(MAX_DRAIN):
            try:
                message = self.sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                return seen
            except OSError:  # ENOBUFS: the kernel dropped messages it could not queue
                return True
            seen = seen or concerns_pci(message)
        return True

    def close(self) -> None:
        self.sock.close()


def concerns_pci(message: bytes) -> bool:
    """A kernel uevent (``ACTION@DEVPATH\\0KEY=VALUE\\0...``) of a device under a PCI
    host bridge: a function, or a child of one (its network interface, an mdev)."""
    header = message.split(b"\0", 1)[0]
    _, at, devpath = header.partition(b"@")
    return bool(at) and devpath.startswith(b"/devices/pci")


def kernel_uevents(sysfs_root: Path) -> UeventWatch | None:
    """A watch on the kernel's uevents when ``sysfs_root`` is the host's own, else None."""
    if sysfs_root.resolve() != Path("/"):
        return None
    try:
        sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_KOBJECT_UEVENT
        )
    except (OSError, AttributeError):  # no netlink here: scan at every discovery
        return None
    try:
        sock.bind((0, KERNEL_GROUP))
    except OSError as exc:
        sock.close()
        log.info("kernel uevents unavailable (%s): scanning at every discovery", exc)
        return None
    return UeventWatch(sock)
