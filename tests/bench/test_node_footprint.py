"""What bench.node_footprint reads from /proc: a wrong reading would put a wrong
figure in docs/benchmarks.md."""

from __future__ import annotations

import os

from bench.node_footprint import Footprint, pss_mib, rows
from bench.procfs import rss_mib


def test_proportional_memory_is_read_and_is_at_most_the_resident() -> None:
    own = os.getpid()
    assert 0 < pss_mib(own) <= rss_mib(own) + 1  # the two files are read a moment apart


def test_a_row_shows_each_figure_in_its_unit() -> None:
    footprint = Footprint("example", "drivers in the agent", 1, 0.8234, 10, 1.333, 50.46, 67.1)
    assert rows([footprint], 60)[2] == (
        "| example | drivers in the agent | 1 | 823 ms | 10 | 1.33 ms/s | 50.5 MiB | 67.1 MiB |"
    )
