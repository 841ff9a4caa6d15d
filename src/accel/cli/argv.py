"""Command lines of accel's daemons, built from their click options.

Whatever starts a daemon as a process of its own (``accel up``, the integration
tests' processes, the benchmarks) names each setting by the command's parameter
name (``heartbeat_interval=0.5``), and the flag comes from the command's own click
option. A renamed flag then changes every command line that sets it, and a setting
that the command no longer has fails at once, naming itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import click

Setting = str | int | float | bool | Path | Iterable[str] | None


def flags(command: click.Command, **settings: Setting) -> list[str]:
    """``settings`` as ``command``'s flags, in the order given; a None is left out (the
    option's default holds), a boolean sets its flag or, where it has one, its
    ``--no-`` form, and a several-times option is given once per value."""
    options = {param.name: param for param in command.params if isinstance(param, click.Option)}
    argv: list[str] = []
    for name, value in settings.items():
        option = options.get(name)
        if option is None:
            raise TypeError(f"accel {command.name} has no option for {name!r}")
        if value is None:
            continue
        flag = _long(option.opts)
        if option.is_flag:
            if not isinstance(value, bool):
                raise TypeError(f"{flag} of accel {command.name} is on or off, not {value!r}")
            if value:
                argv.append(flag)
            elif option.secondary_opts:
                argv.append(_long(option.secondary_opts))
        elif option.multiple:
            assert isinstance(value, Iterable) and not isinstance(value, str), (name, value)
            for each in value:
                argv += [flag, str(each)]
        else:
            argv += [flag, str(value)]
    return argv


def accel_argv(command: click.Command, **settings: Setting) -> list[str]:
    """``python -m accel COMMAND`` with ``settings`` (this interpreter's accel)."""
    assert command.name is not None
    return [sys.executable, "-m", "accel", command.name, *flags(command, **settings)]


def _long(opts: list[str]) -> str:
    return max(opts, key=len)
