"""The ``accel`` console script.

``--config FILE`` (or ``ACCEL_CONFIG``) names a TOML file whose sections hold flag
values per command (``[conductor]``, ``[agent]``, ...) and whose ``[common]`` section
applies to every command. A flag on the command line beats its environment
variable, which beats the file, which beats the default.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import click

from accel import __version__
from accel.cli.discover import discover
from accel.cli.fleet_daemons import api, conductor
from accel.cli.node_daemons import agent, driver
from accel.cli.operations import operations, setup
from accel.cli.operator import agents, alarms, conductors, hardware, placement
from accel.cli.sim import sim
from accel.cli.up import up

COMMANDS = ("driver", "agent", "conductor", "api", "up", "discover", "sim")


def _default_map(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--config") from exc
    unknown = set(document) - {*COMMANDS, "common"}
    if unknown:
        raise click.BadParameter(
            f"unknown section(s) {', '.join(sorted(unknown))} in {path}", param_hint="--config"
        )

    def flags(section: dict[str, Any]) -> dict[str, Any]:
        return {key.replace("-", "_"): value for key, value in section.items()}

    common = flags(document.get("common", {}))
    return {command: {**common, **flags(document.get(command, {}))} for command in COMMANDS}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="accel")
@click.option(
    "--config",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    envvar="ACCEL_CONFIG",
    default=None,
    help="TOML file of flag values.",
)
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """accel: accelerator management for fleets of servers."""
    if config is not None:
        ctx.default_map = _default_map(config)


for command in (
    driver,
    agent,
    conductor,
    api,
    up,
    discover,
    sim,
    agents,
    conductors,
    hardware,
    alarms,
    placement,
    setup,
    operations,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="accel")
