"""What bench.node_footprint reads from /proc: a wrong reading would put a wrong
figure in docs/benchmarks.md."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from accel.driver import change_watch
from accel.driver.discovery import Discoverer
from accel.driver.pci_ids import PciIdDatabase
from accel.driver.service import DriverService, DriverSettings
from accel.driver.tree_watch import TreeWatch
from accel.driver.uevents import UeventWatch, kernel_uevents
from accel.internal.schemas import Kind
from accel.internal.versions import VersionRange
from bench.node_footprint import Footprint, pss_mib, rows
from bench.procfs import rss_mib
from bench.uevent_node import host_uevents


def test_proportional_memory_is_read_and_is_at_most_the_resident() -> None:
    own = os.getpid()
    assert 0 < pss_mib(own) <= rss_mib(own) + 1  # the two files are read a moment apart


def test_a_row_shows_each_figure_in_its_unit() -> None:
    footprint = Footprint("example", "drivers in the agent", 1, 0.8234, 10, 1.333, 50.46, 67.1)
    assert rows([footprint], 60)[2] == (
        "| example | drivers in the agent | 1 | 823 ms | 10 | 1.33 ms/s | 50.5 MiB | 67.1 MiB |"
    )


def test_with_uevents_a_driver_on_a_fake_tree_watches_the_hosts_kernel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = kernel_uevents(Path("/"))
    if probe is None:
        pytest.skip("this host's kernel uevents cannot be read here")
    probe.close()

    def source_of(root: Path) -> object:
        settings = DriverSettings(
            discoverer=Discoverer(Kind.GPU, root, names=PciIdDatabase.empty()),
            agent="http://127.0.0.1:9",
            endpoint="127.0.0.1:9",
            token="t",
            versions=VersionRange(),
            health_interval=None,
        )
        return DriverService(settings).watch.source

    # As accel runs it: a fake tree is watched through inotify.
    assert isinstance(source_of(tmp_path / "as-accel-runs"), TreeWatch)
    monkeypatch.setattr(change_watch, "open_source", host_uevents)  # as the bench runs it
    assert isinstance(source_of(tmp_path / "as-the-bench-runs"), UeventWatch)
