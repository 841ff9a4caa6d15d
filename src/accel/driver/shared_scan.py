"""One reading of a tree's PCI identities at a time per process, shared by the
drivers that ask while it runs.

Every driver starts its discovery by reading the identity (the ``uevent``) of every
PCI function on the node, whatever its kind. The agent asks its built-in drivers,
all in its own process, at the same moment: five readings of the same files. A
driver that asks while another's reading of the same tree runs takes that one's
result instead. That result is as fresh as its own would be, unless the hardware
changed since that reading began: ``note_change`` (this process's setup action just
ran), or the process's watch of the tree (accel.driver.change_watch) counted a change
since, makes the next reading a new one. A driver process of its own is alone in its
process, and reads as before.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from accel.driver.change_watch import seen_changes
from accel.driver.pci import PciIdentity, scan_identities


@dataclass
class _Reading:
    changes: int
    tree_changes: int
    result: Future[list[PciIdentity]] = field(default_factory=Future)


_lock = threading.Lock()
_readings: dict[Path, _Reading] = {}
_changes = 0


def note_change() -> None:
    """This process changed the hardware: no reading begun before now is shared."""
    global _changes
    with _lock:
        _changes += 1


def shared_identities(sysfs_root: Path) -> list[PciIdentity]:
    """``scan_identities(sysfs_root)``, or the result of the one running now."""
    tree_changes = seen_changes(sysfs_root)
    with _lock:
        running = _readings.get(sysfs_root)
        if (
            running is not None
            and running.changes == _changes
            and running.tree_changes == tree_changes
        ):
            joined = running
        else:
            joined = None
            mine = _readings[sysfs_root] = _Reading(_changes, tree_changes)
    if joined is not None:
        return joined.result.result()
    try:
        found = scan_identities(sysfs_root)
    except BaseException as exc:
        mine.result.set_exception(exc)
        raise
    else:
        mine.result.set_result(found)
        return found
    finally:
        with _lock:
            if _readings.get(sysfs_root) is mine:
                del _readings[sysfs_root]
