"""Drivers in one process share a reading of the tree's identities that is running,
unless the process changed the hardware, or its watch of the tree saw a change, since
it began."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from accel.driver import shared_scan
from accel.driver.change_watch import watch_tree
from accel.driver.fake_sysfs import FakeSysfs, build_gpu_server
from accel.driver.pci import PciIdentity, scan_identities
from tests.processes import wait_until


def _blocked_reading(tree: FakeSysfs) -> Path:
    """Makes a function's uevent a FIFO: a reading of the tree waits in it until written."""
    uevent = tree.device_dir("0000:17:00.0") / "uevent"
    uevent.unlink()
    os.mkfifo(uevent)
    return uevent


def _in_thread(root: Path, results: dict[str, list[PciIdentity]], name: str) -> threading.Thread:
    def run() -> None:
        results[name] = shared_scan.shared_identities(root)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reading_that_runs_is_shared_and_a_change_starts_a_new_one(tmp_path: Path) -> None:
    tree = build_gpu_server(tmp_path / "node")
    fifo = _blocked_reading(tree)
    results: dict[str, list[PciIdentity]] = {}
    first = _in_thread(tree.root, results, "first")
    wait_until(lambda: tree.root in shared_scan._readings, "the first reading to start")
    joiner = _in_thread(tree.root, results, "joiner")
    shared_scan.note_change()  # a setup action wrote to sysfs: no sharing from before
    after_change = _in_thread(tree.root, results, "after_change")
    wait_until(
        lambda: (
            shared_scan._readings[tree.root] is not None
            and shared_scan._readings[tree.root].changes == shared_scan._changes
        ),
        "the reading after the change to start",
    )

    _unblock(fifo, (first, joiner, after_change))
    assert results["joiner"] is results["first"]
    assert results["after_change"] is not results["first"]
    fifo.unlink()
    assert results["after_change"] == results["first"] == scan_identities(tree.root)
    assert shared_scan._readings == {}


def test_a_reading_begun_before_a_change_the_watch_saw_is_not_shared(tmp_path: Path) -> None:
    tree = build_gpu_server(tmp_path / "node")
    watch = watch_tree(tree.root)
    fifo = _blocked_reading(tree)
    watch.look()
    results: dict[str, list[PciIdentity]] = {}
    first = _in_thread(tree.root, results, "first")
    wait_until(lambda: tree.root in shared_scan._readings, "the first reading to start")
    tree.bind("0000:31:00.0", "vfio-pci")  # the tree changes under the running reading
    changes = watch.look()  # as a driver looks before it scans
    after_change = _in_thread(tree.root, results, "after_change")
    wait_until(
        lambda: shared_scan._readings[tree.root].tree_changes == changes,
        "the reading after the change to start",
    )
    _unblock(fifo, (first, after_change))
    assert results["after_change"] is not results["first"]
    fifo.unlink()
    drivers = {identity.address: identity.driver for identity in results["after_change"]}
    assert drivers["0000:31:00.0"] == "vfio-pci"


def _unblock(fifo: Path, threads: tuple[threading.Thread, ...]) -> None:
    """A writer ends the wait of every reader blocked in the FIFO; one that reaches it
    later waits for the next writer."""
    for _ in range(300):
        with contextlib.suppress(OSError):  # ENXIO: no reader in it now
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        for thread in threads:
            thread.join(timeout=0.1)
        if not any(thread.is_alive() for thread in threads):
            break
    assert not any(thread.is_alive() for thread in threads)
