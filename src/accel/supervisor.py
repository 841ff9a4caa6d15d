"""Keeps a set of child processes running: starts them in order, restarts a part
that dies, and stops them all, last started first, on request.

A restart reuses the part's arguments, including any listening socket it inherits,
so a restarted part comes back at the same address. A part that keeps dying is
given up on after ``max_restarts`` within ``restart_window`` seconds.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Part:
    name: str
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    given_up: bool = False


class Supervisor:
    def __init__(
        self,
        parts: Sequence[Part],
        log_dir: Path,
        env: dict[str, str],
        max_restarts: int = 5,
        restart_window: float = 60.0,
        on_event: Callable[[str], None] = print,
    ) -> None:
        self.parts = list(parts)
        self.log_dir = log_dir
        self.env = env
        self.max_restarts = max_restarts
        self.restart_window = restart_window
        self.on_event = on_event
        self.stopping = False
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, part: Part) -> None:
        with open(self.log_dir / f"{part.name}.log", "ab") as output:
            part.process = subprocess.Popen(
                part.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                pass_fds=part.pass_fds,
                env=self.env,
                start_new_session=True,  # Ctrl-C reaches us only; we stop parts in order
            )
        self._write_pids()

    def check(self) -> None:
        """Restarts every part that exited while we were not stopping."""
        if self.stopping:
            return
        now = time.monotonic()
        for part in self.parts:
            if part.process is None or part.given_up or part.process.poll() is None:
                continue
            code = part.process.returncode
            part.restarts = [t for t in part.restarts if now - t < self.restart_window]
            if len(part.restarts) >= self.max_restarts:
                part.given_up = True
                self.on_event(
                    f"{part.name} exited ({code}) {self.max_restarts} times in "
                    f"{self.restart_window:g}s; not restarting it "
                    f"(see {self.log_dir / (part.name + '.log')})"
                )
                continue
            part.restarts.append(now)
            self.on_event(f"{part.name} exited ({code}); restarting it")
            self.start(part)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to each part, last started first, then SIGKILL to any left."""
        self.stopping = True
        for part in reversed(self.parts):
            if part.process is not None and part.process.poll() is None:
                part.process.send_signal(signal.SIGTERM)
                try:
                    part.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.on_event(f"{part.name} did not stop in {timeout:g}s; killing it")
                    part.process.kill()
                    part.process.wait()

    def log_tail(self, part: Part, lines: int = 15) -> list[str]:
        """The last lines that a part wrote, for an operator reading why it failed."""
        try:
            text = (self.log_dir / f"{part.name}.log").read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def _write_pids(self) -> None:
        pids = {part.name: part.process.pid for part in self.parts if part.process is not None}
        temporary = self.log_dir.parent / "parts.json.tmp"
        temporary.write_text(json.dumps(pids, indent=2))
        os.replace(temporary, self.log_dir.parent / "parts.json")
