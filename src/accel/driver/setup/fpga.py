"""FPGA programming: load a bitstream from the driver's bitstream folder with its tool.

What runs is the operator's configuration, never the caller's: ``--fpga-program-tool``
is an argv template (split like a shell would, but never run by one) whose words may
hold ``{address}`` (``0000:86:00.0``), ``{bus}`` (``86``) and ``{bitstream}`` (the
bitstream's full path), e.g. ``xbmgmt program --device {address} --base --image
{bitstream}`` (Xilinx/AMD XRT) or ``fpgaconf -B 0x{bus} {bitstream}`` (Intel OPAE).
The caller names only a bitstream file, which must be a regular file inside
``--bitstream-dir`` once every symlink is resolved.

The tool runs as a subprocess in its own session, without accel's ``ACCEL_*``
environment (the internal token among it), with a timeout (``--setup-timeout``)
after which it and its children are killed; the tail of its output goes into the
operation's error when it fails.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import stat
import string
from collections import deque
from contextlib import suppress
from pathlib import Path

from accel.driver.setup.common import Plan, Progress, SetupConfig, SetupFailed
from accel.errors import InvalidInput
from accel.internal.setup_schemas import ProgramFpga

PLACEHOLDERS = ("address", "bus", "bitstream")
OUTPUT_TAIL_BYTES = 4096
ERROR_TAIL_CHARS = 2000
KILL_GRACE_SECONDS = 5.0


def parse_tool_template(text: str) -> tuple[str, ...]:
    """The argv template of ``--fpga-program-tool``, checked; ValueError says what is wrong."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise ValueError(f"cannot split {text!r} into words: {exc}") from exc
    if not argv:
        raise ValueError("the programming tool's command is empty")
    for position, word in enumerate(argv):
        try:
            fields = [parsed for parsed in string.Formatter().parse(word) if parsed[1] is not None]
        except ValueError as exc:
            raise ValueError(f"{word!r}: {exc} (write a literal brace as {{{{ or }}}})") from exc
        for _, name, spec, conversion in fields:
            # Plain names only: str.format would otherwise reach attributes and items.
            if name not in PLACEHOLDERS or spec or conversion:
                raise ValueError(
                    f"{word!r}: the placeholders are {{address}}, {{bus}} and {{bitstream}}"
                )
            if position == 0:
                raise ValueError("the program itself must be fixed, not a placeholder")
    return tuple(argv)


def tool_argv(template: tuple[str, ...], address: str, bitstream: Path) -> list[str]:
    bus = address.split(":")[1]
    return [word.format(address=address, bus=bus, bitstream=str(bitstream)) for word in template]


def bitstream_path(folder: Path, name: str) -> Path:
    """The bitstream's resolved path, refused unless it is a regular file inside ``folder``."""
    try:
        root = folder.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise InvalidInput(f"the bitstream folder {folder} is not there: {exc}") from exc
    try:
        resolved = (root / name).resolve(strict=True)
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise InvalidInput(f"there is no bitstream {name} in {root}") from exc
    if not resolved.is_relative_to(root):
        raise InvalidInput(f"bitstream {name} leads outside the bitstream folder {root}")
    try:
        mode = resolved.stat().st_mode
    except OSError as exc:
        raise InvalidInput(f"cannot read bitstream {name} in {root}: {exc}") from exc
    if not stat.S_ISREG(mode):
        raise InvalidInput(f"bitstream {name} in {root} is not a regular file")
    return resolved


def plan_program(address: str, request: ProgramFpga, config: SetupConfig) -> Plan:
    """Checks the configuration and the bitstream; InvalidInput says what is missing."""
    if config.program_tool is None:
        raise InvalidInput(
            "this node has no FPGA programming tool configured: "
            "set --fpga-program-tool (ACCEL_FPGA_PROGRAM_TOOL) on its FPGA driver"
        )
    if config.bitstream_dir is None:
        raise InvalidInput(
            "this node has no bitstream folder configured: "
            "set --bitstream-dir (ACCEL_BITSTREAM_DIR) on its FPGA driver"
        )
    bitstream = bitstream_path(config.bitstream_dir, request.bitstream)
    program = shutil.which(config.program_tool[0])
    if program is None:
        raise InvalidInput(
            f"the FPGA programming tool {config.program_tool[0]} is not an executable here"
        )
    argv = tool_argv(config.program_tool, address, bitstream)
    argv[0] = program  # found once, here, so that PATH cannot change what runs later
    command = shlex.join(argv)

    async def run(progress: Progress) -> None:
        code, output = await run_tool(argv, config.timeout)
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise SetupFailed(f"{command} {how}; its output ended with:\n{output}")
        progress.done(f"ran {command}")

    return Plan([f"run {command}"], run)


async def run_tool(argv: list[str], time_limit: float) -> tuple[int, str]:
    """Runs ``argv`` (no shell) to its end; its exit status and the tail of its output.

    SetupFailed if it cannot start or runs past ``time_limit`` seconds (it is killed).
    """
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            # Its own process group, so that a timeout kills whatever it started too.
            start_new_session=True,
            env=tool_environment(),
        )
    except OSError as exc:
        raise SetupFailed(f"cannot start {argv[0]}: {exc}") from exc
    tail: deque[bytes] = deque()
    try:
        async with asyncio.timeout(time_limit):
            await _drain(process, tail)
            code = await process.wait()
    except TimeoutError as exc:
        _kill(process)
        await _finish(process, tail)
        raise SetupFailed(
            f"{shlex.join(argv)} did not finish within {time_limit:g} s and was killed; "
            f"its output ended with:\n{_text(tail)}"
        ) from exc
    except BaseException:  # cancelled (the driver is stopping): leave nothing running
        _kill(process)
        await _finish(process, tail)
        raise
    return code, _text(tail)


def tool_environment() -> dict[str, str]:
    """The driver's environment without accel's own settings: ACCEL_INTERNAL_TOKEN is
    the deployment's secret, and a vendor's tool has no business reading it."""
    return {key: value for key, value in os.environ.items() if not key.startswith("ACCEL_")}


async def _drain(process: asyncio.subprocess.Process, tail: deque[bytes]) -> None:
    """Reads the output to its end, keeping only the last few KiB (a tool may be chatty)."""
    assert process.stdout is not None
    kept = 0
    while chunk := await process.stdout.read(65536):
        tail.append(chunk)
        kept += len(chunk)
        while kept - len(tail[0]) >= OUTPUT_TAIL_BYTES:
            kept -= len(tail.popleft())


async def _finish(process: asyncio.subprocess.Process, tail: deque[bytes]) -> None:
    """After a kill: reads the pipe to its end and reaps the process, so neither is left
    open; bounded, in case something escaped the process group and holds the pipe."""
    with suppress(TimeoutError):
        async with asyncio.timeout(KILL_GRACE_SECONDS):
            await _drain(process, tail)
            await process.wait()


def _text(tail: deque[bytes]) -> str:
    text = b"".join(tail).decode("utf-8", "replace").strip()
    return text[-ERROR_TAIL_CHARS:] if text else "(nothing)"


def _kill(process: asyncio.subprocess.Process) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
