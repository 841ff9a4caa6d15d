"""What every setup action shares: its configuration, its plan, and how it fails.

An action is checked first and run later. Checking (``plan_*`` in each action's
module) reads the hardware and the driver's configuration and either refuses the
request with ``InvalidInput`` (the endpoint's synchronous 400) or returns a
``Plan``: the steps it would take, for a dry run, and the coroutine that takes
them. Running reports each step once it is done through ``Progress``, and stops
at the first failure with ``SetupFailed``, whose message becomes the operation's
error.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SETUP_TIMEOUT = 600.0

# Runs a plan's steps; a coroutine function, so tests can asyncio.run it.
Runner = Callable[["Progress"], Coroutine[Any, Any, None]]
# Writes one sysfs attribute; tests pass one that also plays the kernel's part.
Writer = Callable[[str, str], None]


class SetupFailed(Exception):
    """A step failed while running; the message says which and why, for operators."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def write_attribute(path: str, value: str) -> None:
    """Writes ``value`` to a sysfs attribute, as ``echo -n value > path`` would.

    No ``O_CREAT``: an attribute that is missing means the kernel does not offer
    it, and creating a plain file in its place would hide that. ``O_TRUNC`` is
    ignored by sysfs and keeps a fake tree's file holding exactly the value.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(descriptor, value.encode())
    finally:
        os.close(descriptor)


def describe_os_error(exc: OSError) -> str:
    """``Device or resource busy (EBUSY)``: the kernel's words and the errno's name."""
    if exc.errno is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{os.strerror(exc.errno)} ({name})"


@dataclass(frozen=True)
class SetupConfig:
    """The driver's setup options (``accel driver`` flags), none of them the caller's."""

    program_tool: tuple[str, ...] | None = None  # argv template, see fpga.py
    bitstream_dir: Path | None = None
    timeout: float = DEFAULT_SETUP_TIMEOUT  # for the programming tool
    write: Writer = field(default=write_attribute)


@dataclass
class Progress:
    """What a running action has done so far; the registry shows it to pollers."""

    steps: list[str] = field(default_factory=list)
    reboot_required: bool = False

    def done(self, step: str) -> None:
        self.steps.append(step)


@dataclass(frozen=True)
class Plan:
    """A checked action: what it would do, and the coroutine that does it."""

    steps: list[str]
    run: Runner
    # Whether the hardware changes; a no-op plan needs no rediscovery afterwards.
    changes: bool = True
