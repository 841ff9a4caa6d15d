"""Whether anything in a fake sysfs tree changed since the last look, from inotify.

A fake tree (examples/gpu-server, what ``make run`` reads; the tests'; the
simulator's) is plain files and links, and its changes send no uevents. The kernel's
inotify reports every write, create, delete, rename, link and attribute change in a
watched directory, queued during the very call that made it, so a look right after
sees it. (The host's own sysfs gives no inotify: accel.driver.uevents watches it.)

The watch covers every directory discovery reads: ``sys/bus/pci/devices``, whose
links come and go with functions, and, recursively, the directory each link there
leads to (a function's attributes and its ``qat/``, ``net/``, ``mdev_supported_types/``
...). A function's own links (``driver``, ``physfn``, ``virtfnN``, ``iommu_group``) are
read as links, so a change to one is a change in the function's directory. A directory
that appears in a watched one is watched, and its contents listed, before the look
that reports it returns: the scan that look starts cannot miss a write inside it.

A link's directory lies outside what is watched (``sys/devices/...``), so its coming
sends no event: a link that leads nowhere yet (made before its directory), or whose
directory went while it stayed, is kept aside and looked at again at each look until
its directory is there (then watched, and reported) or the link is gone.

What the watch cannot vouch for counts as a change: the kernel's queue overflowed (the
watch is rebuilt), the devices directory went away (rebuilt once it is back), or a
watch could not be added (the per-user limit, say; from then on every look is a
change, as for a driver with no watch at all).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

from accel.driver.pci import devices_dir

try:
    from inotify_simple import INotify, flags
except ImportError:  # a node installed without the "node" extra: no watch, scans
    INotify = flags = None

log = logging.getLogger(__name__)

# Everything that changes what a scan reads; not reads (IN_ACCESS, IN_OPEN), which
# the scans and health polls themselves make. Directories only, links not followed.
_MASK = (
    0
    if flags is None
    else flags.MODIFY
    | flags.ATTRIB
    | flags.CREATE
    | flags.DELETE
    | flags.MOVED_FROM
    | flags.MOVED_TO
    | flags.DELETE_SELF
    | flags.MOVE_SELF
    | flags.ONLYDIR
    | flags.DONT_FOLLOW
)

# Past this many directories it is no fake tree: scan rather than hold the watches.
MAX_DIRECTORIES = 100_000
# Reads of the queue per look; events that keep coming past that count as overflow.
MAX_READS = 64


class Unwatchable(OSError):
    """A directory of the tree could not be watched: the tree cannot be vouched for."""


class TreeWatch:
    """inotify on one tree's directories; ``changed`` reads what came without waiting.

    Not thread-safe: ``ChangeWatch`` (accel.driver.change_watch) looks under its lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices = devices_dir(root)
        self._inotify: Any = None
        self._paths: dict[int, str] = {}  # watch descriptor -> the directory it watches
        self._devices_wd: int | None = None
        # Names of links in ``devices`` whose directory is not watched: none, or gone.
        self._unfollowed: set[str] = set()
        self._broken = False
        self._start()

    def changed(self) -> bool:
        """Whether the tree changed since the last call, or may have."""
        if self._broken:
            return True
        try:
            if self._devices_wd is None:  # gone at the last look: try again
                self._start()
                return True
            events = self._drain()
            if events is None:
                log.info("inotify queue of %s overflowed: watching it anew", self.root)
                self._start()
                return True
            changed = self._handle(events)
            # After the events: a directory gone and back since the last look is one.
            return (self._follow_again() if self._unfollowed else False) or changed
        except OSError as exc:
            self._give_up(exc)
            return True

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    @property
    def directories(self) -> int:
        """How many directories are watched now."""
        return len(self._paths)

    def _start(self) -> None:
        """A new inotify instance, and every directory of the tree watched by it."""
        self.close()
        self._paths = {}
        self._devices_wd = None
        self._unfollowed = set()
        try:
            self._inotify = INotify(nonblocking=True)
            self._devices_wd = self._watch(self.devices)
            if self._devices_wd is not None:
                self._paths[self._devices_wd] = self.devices
                for name in _listdir(self.devices):
                    self._follow(name)
        except OSError as exc:
            self._give_up(exc)

    def _drain(self) -> list[Any] | None:
        """Every queued event; None if some were lost (or keep coming)."""
        events: list[Any] = []
        for _ in range(MAX_READS):
            batch = self._inotify.read(timeout=0)
            if not batch:
                return events
            if any(event.mask & flags.Q_OVERFLOW for event in batch):
                return None
            events.extend(batch)
        return None

    def _handle(self, events: list[Any]) -> bool:
        lost = False  # a directory's watch went: was it a link's?
        for event in events:
            if event.mask & flags.IGNORED:  # the directory is gone, and its watch with it
                self._paths.pop(event.wd, None)
                if event.wd == self._devices_wd:
                    self._devices_wd = None
                lost = True
            elif event.mask & flags.MOVE_SELF and event.wd == self._devices_wd:
                self._devices_wd = None  # its links are read elsewhere now: anew
            elif event.mask & (flags.CREATE | flags.MOVED_TO):
                parent = self._paths.get(event.wd)
                if parent is None:
                    continue
                if event.wd == self._devices_wd:
                    self._follow(event.name)  # a function's link appeared
                elif event.mask & flags.ISDIR:
                    self._walk(f"{parent}/{event.name}")
        if lost and self._devices_wd is not None:
            self._unfollowed.update(self._unwatched_links())
        return bool(events)

    def _follow(self, name: str) -> bool:
        """Watches the directory a link in ``sys/bus/pci/devices`` leads to; False
        (and the link kept aside) while it leads to none."""
        target = os.path.realpath(f"{self.devices}/{name}")
        if os.path.isdir(target):
            self._walk(target)
            self._unfollowed.discard(name)
            return True
        self._unfollowed.add(name)
        return False

    def _follow_again(self) -> bool:
        """Follows the links kept aside whose directory is there now: whether any was."""
        followed = False
        for name in list(self._unfollowed):
            if not os.path.lexists(f"{self.devices}/{name}"):
                self._unfollowed.discard(name)
            elif self._follow(name):
                followed = True
        return followed

    def _unwatched_links(self) -> list[str]:
        """The links in ``devices`` whose directory is not watched (after a watch went:
        a directory removed, whose link may stay, and its directory come again)."""
        watched = set(self._paths.values())
        return [
            name
            for name in _listdir(self.devices)
            if os.path.realpath(f"{self.devices}/{name}") not in watched
        ]

    def _walk(self, top: str) -> None:
        """Watches ``top`` and every directory below it, each before listing it, so a
        directory made meanwhile is either listed or reported."""
        pending = [top]
        while pending:
            path = pending.pop()
            wd = self._watch(path)
            if wd is None:
                continue
            if self._paths.get(wd) == path:
                continue  # watched already, with everything below it
            self._paths[wd] = path
            if len(self._paths) > MAX_DIRECTORIES:
                raise Unwatchable(errno.ENOSPC, f"more than {MAX_DIRECTORIES} directories")
            pending.extend(_subdirectories(path))

    def _watch(self, path: str) -> int | None:
        """The watch descriptor of ``path``, or None if it is no longer a directory."""
        try:
            return int(self._inotify.add_watch(path, _MASK))
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise Unwatchable(exc.errno, f"{path}: {exc.strerror}") from exc

    def _give_up(self, exc: OSError) -> None:
        log.warning("cannot watch %s (%s): scanning it at every discovery", self.root, exc)
        self.close()
        self._paths = {}
        self._broken = True


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _subdirectories(path: str) -> list[str]:
    try:
        with os.scandir(path) as entries:
            return [entry.path for entry in entries if entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def tree_watch(root: Path) -> TreeWatch | None:
    """inotify on the tree under ``root``, or None where inotify cannot be had."""
    if INotify is None:
        log.info("inotify-simple is not installed: %s is scanned at every discovery", root)
        return None
    watch = TreeWatch(root)
    return None if watch._broken else watch
