"""A recurring failure is logged once, then at most once an interval."""

from __future__ import annotations

from accel.log_limit import EveryFew


def test_the_first_line_is_due_and_the_next_within_the_interval_is_not() -> None:
    limit = EveryFew(3600.0)
    assert limit.due()
    assert not limit.due()


def test_with_no_interval_every_line_is_due() -> None:
    limit = EveryFew(0.0)
    assert limit.due() and limit.due()
