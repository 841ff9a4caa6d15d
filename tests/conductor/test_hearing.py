"""When a conductor may judge its agents' silence: a whole grace after it could hear."""

from __future__ import annotations

from accel.conductor.hearing import Hearing


class Clock:
    def __init__(self) -> None:
        self.time = 1000.0

    def __call__(self) -> float:
        return self.time


def test_no_judgement_before_a_whole_grace_from_the_start() -> None:
    clock = Clock()
    hearing = Hearing(30.0, clock)
    clock.time += 29.9
    assert not hearing.may_judge()
    clock.time += 0.1
    assert hearing.may_judge()


def test_a_database_error_restarts_the_grace() -> None:
    clock = Clock()
    hearing = Hearing(30.0, clock)
    clock.time += 100
    hearing.restart()
    clock.time += 29
    assert not hearing.may_judge()
    clock.time += 1
    assert hearing.may_judge()


def test_a_sweep_waking_far_too_late_restarts_the_grace() -> None:
    clock = Clock()
    hearing = Hearing(30.0, clock)
    clock.time += 100
    planned = clock.time + 3
    clock.time += 3 + 60  # stopped for a minute
    hearing.woke(planned)
    assert not hearing.may_judge()
    clock.time += 30
    assert hearing.may_judge()


def test_a_sweep_a_little_late_changes_nothing() -> None:
    clock = Clock()
    hearing = Hearing(30.0, clock)
    clock.time += 100
    planned = clock.time + 3
    clock.time += 3 + hearing.max_lag
    hearing.woke(planned)
    assert hearing.may_judge()
