"""Daemon command lines built from the click options (accel.cli.argv)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from accel.cli.argv import accel_argv, flags
from accel.cli.fleet_daemons import conductor
from accel.cli.node_daemons import driver


def test_settings_become_the_commands_own_flags() -> None:
    argv = accel_argv(
        conductor, database="sqlite:///x.db", heartbeat_interval=0.5, agent_down_after=None
    )
    assert argv == [
        sys.executable,
        *("-m", "accel", "conductor"),
        *("--database", "sqlite:///x.db", "--heartbeat-interval", "0.5"),
    ]


def test_on_off_flags_and_repeated_options() -> None:
    on = flags(driver, nvml=True, allow=("10de:*", "8086:*"), sysfs_root=Path("/srv"))
    assert on == ["--nvml", "--allow", "10de:*", "--allow", "8086:*", "--sysfs-root", "/srv"]
    assert flags(driver, nvml=False) == ["--no-nvml"]


def test_a_setting_the_command_lacks_fails_naming_it() -> None:
    with pytest.raises(TypeError, match="accel conductor has no option for 'heartbeat'"):
        flags(conductor, heartbeat=10)
    with pytest.raises(TypeError, match="on or off"):
        flags(driver, nvml="yes")


def test_the_command_reads_back_what_was_built(tmp_path: Path) -> None:
    argv = accel_argv(
        conductor,
        database=f"sqlite:///{tmp_path / 'x.db'}",
        heartbeat_interval=2.5,
        resync_interval=7,
        agent_down_after=9,
        internal_token_file=tmp_path / "token",
    )
    parsed = conductor.make_context("conductor", argv[4:])
    assert (parsed.params["heartbeat_interval"], parsed.params["resync_interval"]) == (2.5, 7.0)
    assert parsed.params["agent_down_after"] == 9.0
    assert parsed.params["internal_token_file"] == tmp_path / "token"
