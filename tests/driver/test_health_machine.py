"""The per-device health state machine: every transition, the hysteresis, silence,
the flap latch, and the per-check policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from accel.driver.health.evidence import Reading
from accel.driver.health.machine import DeviceMachine
from accel.driver.health.policy import Action, HealthPolicy, parse_actions, parse_xids
from accel.states import CheckSeverity, HealthState

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
OK = [Reading("aer_fatal", False, "+0"), Reading("link_width", False, "x16 of x16")]
FATAL = [Reading("aer_fatal", True, "+1", new=True), Reading("link_width", False, "x16 of x16")]
NARROW = [Reading("aer_fatal", False, "+0"), Reading("link_width", True, "x8 of x16")]
SILENT = [Reading("aer_fatal", None), Reading("link_width", None)]


def polls_only(**settings: Any) -> HealthPolicy:
    """A policy without the failed hold: the poll-count hysteresis alone (the hold
    has tests of its own)."""
    return HealthPolicy(**{"failed_hold": 0, **settings})


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def tick(self, seconds: float = 5) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def run(machine: DeviceMachine, clock: Clock, *polls: list[Reading]) -> list[HealthState]:
    states = []
    for readings in polls:
        machine.observe(readings, clock.tick())
        states.append(machine.state)
    return states


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_unknown_until_evidence_then_ok(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(), T0)
    assert run(machine, clock, SILENT, OK, SILENT) == [
        HealthState.UNKNOWN,
        HealthState.OK,
        HealthState.UNKNOWN,  # no evidence at all is unknown, never failed
    ]


def test_fatal_evidence_fails_at_once_and_recovery_needs_clean_polls(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(recover_polls=3), T0)
    states = run(machine, clock, OK, FATAL, OK, OK, OK)
    assert states == [
        HealthState.OK,
        HealthState.FAILED,
        HealthState.FAILED,
        HealthState.FAILED,
        HealthState.OK,
    ]
    check = machine.health().checks[0]
    assert (check.check, check.severity, check.value, check.count) == (
        "aer_fatal",
        CheckSeverity.OK,  # no longer holds the device
        "+1",
        1,
    )
    assert check.first_seen == check.last_seen == T0 + timedelta(seconds=10)


def test_silence_never_heals_and_breaks_the_run_of_clean_polls(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(recover_polls=2), T0)
    states = run(machine, clock, FATAL, OK, SILENT, SILENT, OK, OK)
    assert states == [HealthState.FAILED] * 5 + [HealthState.OK]


def test_a_first_degrading_reading_is_evidence_ok_not_unknown(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(), T0)
    assert run(machine, clock, NARROW, NARROW) == [HealthState.OK, HealthState.DEGRADED]


def test_degraded_needs_two_of_three_polls(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(), T0)
    assert run(machine, clock, OK, NARROW, OK, OK, NARROW) == [HealthState.OK] * 5
    assert run(machine, clock, NARROW) == [HealthState.DEGRADED]


def test_failed_steps_down_to_degraded_while_degraded_evidence_stays(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(recover_polls=2), T0)
    both = [Reading("aer_fatal", True, "+1", new=True), Reading("link_width", True, "x8 of x16")]
    states = run(machine, clock, both, NARROW, NARROW, OK, OK)
    assert states == [
        HealthState.FAILED,
        HealthState.FAILED,
        HealthState.DEGRADED,
        HealthState.DEGRADED,
        HealthState.OK,
    ]


def test_a_persisting_condition_leaves_the_report_unchanged(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(), T0)
    run(machine, clock, NARROW, NARROW)
    before = machine.health()
    assert machine.observe(NARROW, clock.tick()) is False
    assert machine.health() == before
    assert machine.observe([*OK[:1], Reading("link_width", True, "x4 of x16")], clock.tick())
    check = machine.health().checks[0]
    assert (check.value, check.count, check.last_seen) == ("x4 of x16", 2, clock.now)


def test_counter_evidence_moves_last_seen_and_count(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(), T0)
    run(machine, clock, FATAL, FATAL)
    check = machine.health().checks[0]
    assert check.count == 2 and check.last_seen == clock.now and check.first_seen < clock.now


def test_a_device_that_flaps_is_latched_failed(clock: Clock) -> None:
    policy = polls_only(recover_polls=1, flap_count=3, flap_window=600)
    machine = DeviceMachine(policy, T0)
    run(machine, clock, OK, FATAL, OK, FATAL, OK)
    assert machine.state is HealthState.OK
    assert run(machine, clock, FATAL) == [HealthState.FAILED]
    flapping = {c.check: c for c in machine.health().checks}["flapping"]
    assert flapping.latch and flapping.severity is CheckSeverity.FAILED
    assert flapping.value == "3 times failed in 600 s"
    # Held failed while the window still holds three entries, clean evidence or not.
    assert run(machine, clock, OK, OK) == [HealthState.FAILED] * 2
    clock.tick(600)
    assert run(machine, clock, OK) == [HealthState.OK]


def test_going_degraded_again_and_again_is_not_flapping(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(recover_polls=1, flap_count=2, flap_window=600), T0)
    for _ in range(3):
        assert run(machine, clock, NARROW, NARROW, OK)[1:] == [
            HealthState.DEGRADED,
            HealthState.OK,
        ]
    assert "flapping" not in {c.check for c in machine.health().checks}


def test_entries_spread_wider_than_the_window_are_not_flapping(clock: Clock) -> None:
    machine = DeviceMachine(polls_only(recover_polls=1, flap_count=3, flap_window=60), T0)
    for _ in range(4):
        run(machine, clock, FATAL, OK)
        clock.tick(60)
    assert "flapping" not in {c.check for c in machine.health().checks}


def test_the_policy_decides_what_a_bad_reading_does(clock: Clock) -> None:
    actions = parse_actions(["aer_fatal=ignore", "link_width = FAIL"])
    machine = DeviceMachine(polls_only(actions=actions), T0)
    assert run(machine, clock, FATAL) == [HealthState.OK]
    assert run(machine, clock, NARROW) == [HealthState.FAILED]
    latching = DeviceMachine(polls_only(actions=parse_actions(["aer_fatal=latch"])), T0)
    run(latching, clock, FATAL)
    assert latching.health().checks[0].latch


def test_policy_defaults_and_refusals() -> None:
    policy = HealthPolicy()
    assert policy.action("aer_fatal") is Action.FAIL
    assert policy.action("link_speed") is Action.IGNORE
    assert policy.action("flapping") is Action.LATCH
    with pytest.raises(ValueError, match="unknown health check 'aer_fatl'"):
        parse_actions(["aer_fatl=fail"])
    with pytest.raises(ValueError, match="unknown action 'explode'"):
        parse_actions(["aer_fatal=explode"])
    with pytest.raises(ValueError, match="XID numbers"):
        parse_xids("13,x")
    assert parse_xids("13, 45,") == {13, 45}
    with pytest.raises(ValueError):
        HealthPolicy(degrade_polls=4, degrade_window=3)
    with pytest.raises(ValueError, match="failed hold"):
        HealthPolicy(failed_hold=-1)


def test_a_failed_device_stays_failed_for_its_hold_however_clean_the_polls(
    clock: Clock,
) -> None:
    machine = DeviceMachine(HealthPolicy(recover_polls=2, failed_hold=30), T0)
    # Fatal at 5 s, then clean polls every 5 s: the hold ends at 35 s.
    states = run(machine, clock, FATAL, *[OK] * 5, OK)
    assert states == [HealthState.FAILED] * 6 + [HealthState.OK]
    # New failing evidence restarts the hold.
    assert run(machine, clock, FATAL, *[OK] * 5, OK)[-2:] == [HealthState.FAILED, HealthState.OK]


def test_the_hold_never_keeps_a_device_failed_on_silence_alone(clock: Clock) -> None:
    machine = DeviceMachine(HealthPolicy(recover_polls=2, failed_hold=10), T0)
    clock.tick(60)
    # Past the hold, silence still breaks the run of clean polls.
    assert run(machine, clock, FATAL, SILENT, SILENT, SILENT, OK, OK) == [
        *[HealthState.FAILED] * 5,
        HealthState.OK,
    ]
