"""Whether a driver's tree could have changed since its last scan: one watch per
process and tree root, counting the changes it saw.

Every heartbeat asks each driver for a discovery, and on an idle node those scans
were most of its CPU (docs/benchmarks.md, issue 25). A driver that saw no change to
its tree since its last scan answers what that scan found, with fresh health. What
tells it depends on the tree:

- the host's own sysfs (root ``/``): the kernel's PCI uevents (accel.driver.uevents),
  since sysfs gives no inotify;
- a fake tree of plain files (examples/gpu-server, the tests', the simulator's):
  inotify on its directories (accel.driver.tree_watch).

One watch serves every driver of a process that reads the same root (the agent and
its five built-in drivers open one, not five): its count goes up at each look that
found a change, whichever driver looked, and each driver remembers the count its
last scan began at. What neither source reports (a QAT's services set by a tool, an
NVML mode) is seen at the next full scan, at most ``FULL_SCAN_AFTER`` seconds after
the last. Where no source can be opened the watch is blind: every discovery scans.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Protocol

from accel.driver.tree_watch import tree_watch
from accel.driver.uevents import kernel_uevents

# A full scan at least this often, for what changes unannounced: the conductor's
# periodic resync (60 s) meets one.
FULL_SCAN_AFTER = 55.0


class ChangeSource(Protocol):
    """What reports changes to a tree: ``changed`` says whether any came since the
    last call (or may have: it lost some, or failed), without waiting."""

    def changed(self) -> bool: ...

    def close(self) -> None: ...


class ChangeWatch:
    """A tree's changes, counted; shared by the drivers of a process that read it."""

    def __init__(self, root: Path, source: ChangeSource | None) -> None:
        self.root = root
        self.source = source
        self._count = 0
        self._lock = threading.Lock()
        # Closed when the last driver using it lets go, or at exit.
        self._closer = weakref.finalize(self, source.close) if source is not None else None

    @property
    def sees(self) -> bool:
        """False for a blind watch, whose count says nothing: every discovery scans."""
        return self.source is not None

    def look(self) -> int:
        """The count of changes, after reading what came since the last look."""
        if self.source is None:
            return self._count
        with self._lock:
            if self.source.changed():
                self._count += 1
            return self._count

    @property
    def seen(self) -> int:
        """The count as the last look left it."""
        return self._count

    def close(self) -> None:
        if self._closer is not None:
            self._closer()


def open_source(root: Path) -> ChangeSource | None:
    """The kernel's uevents for the host's own sysfs, inotify for any other tree."""
    if root.resolve() == Path("/"):
        return kernel_uevents(root)
    return tree_watch(root)


_lock = threading.Lock()
_watches: weakref.WeakValueDictionary[Path, ChangeWatch] = weakref.WeakValueDictionary()


def watch_tree(root: Path) -> ChangeWatch:
    """This process's watch of ``root``, opened by the first driver that asks."""
    with _lock:
        watch = _watches.get(root)
        if watch is None:
            watch = _watches[root] = ChangeWatch(root, open_source(root))
        return watch


def seen_changes(root: Path) -> int:
    """The count of this process's watch of ``root`` (0 if none), without looking."""
    watch = _watches.get(root)
    return 0 if watch is None else watch.seen
