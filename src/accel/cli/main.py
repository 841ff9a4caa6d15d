"""The ``accel`` console script.

``--config FILE`` (or ``ACCEL_CONFIG``) names a TOML file whose sections hold flag
values per command (``[conductor]``, ``[agent]``, ...) and whose ``[common]`` section
applies to every command. A flag on the command line beats its environment
variable, which beats the file, which beats the default.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import click

from accel import __version__

# Where each command lives, imported only when it runs (or is listed): a node's
# daemon never loads what the operator's and the fleet's commands import (rich,
# httpx, the simulator), and starts sooner.
LAZY_COMMANDS = {
    "driver": "accel.cli.node_daemons:driver",
    "agent": "accel.cli.node_daemons:agent",
    "conductor": "accel.cli.fleet_daemons:conductor",
    "api": "accel.cli.fleet_daemons:api",
    "up": "accel.cli.up:up",
    "discover": "accel.cli.discover:discover",
    "sim": "accel.cli.sim:sim",
    "agents": "accel.cli.operator:agents",
    "conductors": "accel.cli.operator:conductors",
    "hardware": "accel.cli.operator:hardware",
    "alarms": "accel.cli.operator:alarms",
    "placement": "accel.cli.operator:placement",
    "setup": "accel.cli.operations:setup",
    "operations": "accel.cli.operations:operations",
}

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


class LazyCommands(MutableMapping[str, click.Command]):
    """click's table of a group's commands, each imported on first use."""

    def __init__(self, where: dict[str, str]) -> None:
        self._where = dict(where)
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            module, _, attribute = self._where[name].partition(":")
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command), name
            self._loaded[name] = command
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command
        self._where.setdefault(name, "")

    def __delitem__(self, name: str) -> None:
        del self._where[name]
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


cli.commands = LazyCommands(LAZY_COMMANDS)


def main() -> None:
    cli(prog_name="accel")
