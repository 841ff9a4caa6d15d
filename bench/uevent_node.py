"""``python -m bench.uevent_node COMMAND ...``: ``python -m accel COMMAND ...`` whose
drivers watch this host's kernel uevents whatever sysfs root they read.

On a node the built-in drivers read the host's own sysfs, and a driver that heard no
PCI uevent since its last scan skips the next (accel.driver.uevents). A fake tree is
not the host's, so accel watches it through inotify instead
(accel.driver.tree_watch); bench.node_footprint's ``--uevents`` runs the node through
this module to measure the uevent path on a fake tree: a quiet host sends no PCI
uevents, as a quiet node's kernel does not.
"""

from __future__ import annotations

from pathlib import Path

from accel.driver import change_watch
from accel.driver.uevents import UeventWatch, kernel_uevents


def host_uevents(root: Path) -> UeventWatch | None:
    return kernel_uevents(Path("/"))


if __name__ == "__main__":
    from accel.cli.main import main

    change_watch.open_source = host_uevents
    main()
