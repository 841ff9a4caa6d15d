"""deploy/: the example config and the systemd units say only what accel accepts.

Each unit's ExecStart is parsed by the real command line (with the example config in
place of /etc/accel/accel.toml), so a renamed flag breaks this test, not a fleet.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest

from accel.cli.main import _default_map, cli

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
CONFIG = DEPLOY / "accel.toml"


def test_every_key_of_the_example_config_is_a_flag_of_its_command() -> None:
    defaults = _default_map(CONFIG)
    for name in ("driver", "agent", "conductor", "api"):
        command = cli.commands[name]
        flags = {param.name for param in command.params}
        assert set(defaults[name]) <= flags, (name, set(defaults[name]) - flags)


@pytest.mark.parametrize("unit", sorted(DEPLOY.glob("*.service")), ids=lambda p: p.name)
def test_each_unit_runs_a_command_accel_accepts(unit: Path) -> None:
    [exec_start] = [
        line.split("=", 1)[1]
        for line in unit.read_text().splitlines()
        if line.startswith("ExecStart=")
    ]
    argv = shlex.split(exec_start.replace("%i", "GPU").replace("%H", "node1"))
    assert argv[0] == "/opt/accel/bin/accel"
    assert argv[1:3] == ["--config", "/etc/accel/accel.toml"]
    name, args = argv[3], argv[4:]
    command = cli.commands[name]
    assert isinstance(command, click.Command)
    with click.Context(cli, info_name="accel", default_map=_default_map(CONFIG)) as parent:
        # Parses and validates every flag (required ones may come from the config).
        context = command.make_context(name, args, parent=parent, resilient_parsing=False)
        assert context.params
