"""How long an agent waits between hellos: the heartbeat, or a spread-out backoff."""

from __future__ import annotations

import random

from accel.agent.service import hello_pause


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
