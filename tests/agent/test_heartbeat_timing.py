"""When an agent says its next hello: on its own beat in the interval, or after a
spread-out backoff while no conductor answers."""

from __future__ import annotations

import random

from accel.agent.heartbeat_timing import heartbeat_phase, hello_pause, next_heartbeat


def test_an_answered_agent_waits_one_heartbeat() -> None:
    assert hello_pause(10.0, failures=0) == 10.0


def test_unanswered_hellos_back_off_up_to_the_heartbeat_within_jittered_windows() -> None:
    random.seed(8)
    for failures, (low, high) in {1: (0.5, 1.0), 2: (1.0, 2.0), 3: (2.0, 4.0)}.items():
        pauses = [hello_pause(10.0, failures) for _ in range(200)]
        assert all(low <= pause <= high for pause in pauses)
    # Capped by the heartbeat interval, however long the conductors stay away.
    assert all(5.0 <= hello_pause(10.0, failures) <= 10.0 for failures in (5, 50, 5000))
    # A fast heartbeat (tests, small fleets) keeps retries that fast.
    assert all(hello_pause(0.5, failures) <= 0.5 for failures in range(1, 10))


def test_a_fleet_retrying_together_is_spread_over_the_window() -> None:
    random.seed(9)
    pauses = sorted(hello_pause(10.0, failures=4) for _ in range(1000))
    assert pauses[0] >= 4.0 and pauses[-1] <= 8.0
    # Spread across the window, not bunched at one instant.
    assert pauses[100] < 4.6 and pauses[900] > 7.4


def test_an_agent_keeps_its_own_beat_one_interval_apart() -> None:
    phase = heartbeat_phase("node17", 10.0)
    assert phase == heartbeat_phase("node17", 10.0)  # the same after a restart
    now = 1_000_000.0 + phase + 0.3  # a hello on the beat just took 0.3 s
    pause = next_heartbeat(10.0, phase, now)
    assert abs(pause - 9.7) < 1e-6  # the next beat is one interval after the last


def test_an_agent_off_its_beat_waits_at_least_a_quarter_interval() -> None:
    phase = heartbeat_phase("node17", 10.0)
    for early in (0.1, 2.0, 2.6, 5.0, 9.9):
        now = 1_000_000.0 + phase - early
        pause = next_heartbeat(10.0, phase, now)
        assert 2.5 <= pause <= 12.5
        off_beat = (now + pause - phase) % 10.0  # it lands on its beat all the same
        assert min(off_beat, 10.0 - off_beat) < 1e-6


def test_a_fleet_that_started_together_says_hello_spread_over_the_interval() -> None:
    started = 1_000_000.0  # every agent registered at the same instant
    beats = sorted(
        next_heartbeat(30.0, heartbeat_phase(f"node{i:05d}", 30.0), started) for i in range(5000)
    )
    # Each tenth of the interval after the first quarter gets about a tenth of them.
    counts = [sum(1 for b in beats if 7.5 + 3 * k <= b < 7.5 + 3 * (k + 1)) for k in range(10)]
    assert all(400 <= count <= 600 for count in counts), counts
