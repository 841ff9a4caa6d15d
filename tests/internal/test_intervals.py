"""One default per timing meaning (accel.internal.intervals), in every command."""

from __future__ import annotations

from accel.cli.main import cli
from accel.internal.intervals import DRIVER_TIMEOUT, HEARTBEAT_INTERVAL, HELLO_INTERVAL


def test_every_command_takes_its_timing_defaults_from_one_place() -> None:
    expected = {
        "heartbeat_interval": HEARTBEAT_INTERVAL,
        "hello_interval": HELLO_INTERVAL,
        "driver_timeout": DRIVER_TIMEOUT,
    }
    seen = 0
    for command in cli.commands.values():
        for param in command.params:
            if param.name in expected:
                assert param.default == expected[param.name], (command.name, param.name)
                seen += 1
    assert seen >= 7  # driver 1, agent 2, conductor 1, up 1, sim 3
