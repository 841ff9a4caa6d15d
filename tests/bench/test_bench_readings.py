"""What the benchmarks read from the processes they measure: py-spy's samples and a
conductor's counters. A wrong reading would put a wrong figure in docs/benchmarks.md."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.fleet import counted_in
from bench.profile import Profile

# py-spy's raw format: a stack, outermost frame first, then how often it was seen.
SAMPLES = """\
main (app.py:1);serve (server.py:10);select (selectors.py:468) 50
main (app.py:1);serve (server.py:10);hello (accel/conductor/service.py:40) 30
main (app.py:1);serve (server.py:10);hello (accel/conductor/service.py:41);loads (json.py:9) 10
main (app.py:1);walk (accel/tree.py:5);walk (accel/tree.py:7);stat (os.py:3) 10
"""


@pytest.fixture
def sampled() -> Iterator[Profile]:
    """A profile whose py-spy wrote ``SAMPLES``."""
    with Profile(pid=0) as profile:
        profile.output.write_text(SAMPLES)
        yield profile


def test_own_shares_leave_idle_samples_out(sampled: Profile) -> None:
    top = sampled.top()
    # 50 idle samples in select() are not work: 30 + 10 + 10 busy ones are.
    assert top == ("hello accel/conductor/service.py:40 60%, loads json.py:9 20%, stat os.py:3 20%")


def test_inclusive_shares_count_a_recursive_function_once_per_sample(
    sampled: Profile,
) -> None:
    top = sampled.top_inclusive()
    assert top == "hello accel/conductor/service.py 80%, walk accel/tree.py 20%"


def test_a_process_never_sampled_has_no_summary() -> None:
    with Profile(pid=0) as profile:
        assert profile.top() == ""


def test_a_conductors_hellos_and_agent_calls_are_read_from_its_metrics() -> None:
    metrics = """\
accel_hellos_total{component="conductor",outcome="known"} 4950.0
accel_hellos_total{component="conductor",outcome="new"} 50.0
accel_hellos_total{component="agent",outcome="known"} 7.0
accel_discoveries_total{component="conductor",outcome="ok"} 380.0
accel_discoveries_total{component="conductor",outcome="unchanged"} 15.0
accel_discoveries_total{component="conductor",outcome="failed"} 5.0
accel_discoveries_total{component="agent",outcome="ok"} 9.0
accel_hellos_created{component="conductor",outcome="known"} 1.7e+09
"""
    assert counted_in(metrics) == (5000.0, 400.0)
