"""Where a process spends its time while a benchmark runs: py-spy, summarised.

py-spy samples the process from outside (no change to the code under test). The
summary is the functions with the most samples of their own, idle waiting left out.
Without py-spy installed, benchmarks run unprofiled.
"""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

IDLE = ("select (", "Condition.wait", "Queue.get", "run_forever", "_run_once", "epoll")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profile:
    """Samples ``pid`` from start() to stop(); ``top`` then names the hottest functions."""

    def __init__(self, pid: int, rate: int = 200) -> None:
        self.pid = pid
        self.rate = rate
        self._folder = tempfile.TemporaryDirectory(prefix="accel-profile-")
        self.output = Path(self._folder.name) / "profile.txt"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Profile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self._folder.cleanup()

    def start(self) -> None:
        tool = py_spy()
        if tool is None:
            return
        self._process = subprocess.Popen(
            [
                *(tool, "record", "--nonblocking", "-r", str(self.rate)),
                *("-f", "raw", "-o", str(self.output), "-p", str(self.pid)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.send_signal(signal.SIGINT)
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _stacks(self) -> list[tuple[list[str], int]]:
        """The busy samples: each stack (outermost first) and how many times it was seen."""
        if not self.output.exists():
            return []
        stacks = []
        for line in self.output.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            if not samples.isdigit() or not stack:
                continue
            frames = stack.split(";")
            if any(marker in frames[-1] for marker in IDLE):
                continue
            stacks.append((frames, int(samples)))
        return stacks

    def top(self, count: int = 5) -> str:
        """``function (file:line) share%, ...`` for the busiest functions, or ''."""
        own: collections.Counter[str] = collections.Counter()
        for frames, samples in self._stacks():
            own[frames[-1]] += samples
        return _shares(own, sum(own.values()), count)

    def top_inclusive(self, within: str = "accel/", count: int = 8) -> str:
        """The functions of ``within`` with the most samples including their callees:
        where a component's time goes, not only which leaf burns it."""
        stacks = self._stacks()
        total = sum(samples for _, samples in stacks)
        inclusive: collections.Counter[str] = collections.Counter()
        for frames, samples in stacks:
            # A function counted once per sample, however deep its recursion.
            seen = {_function(frame) for frame in frames if within in frame}
            for function in seen:
                inclusive[function] += samples
        return _shares(inclusive, total, count)


def _function(frame: str) -> str:
    """``name (path:line)`` without the line: one entry per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rpartition(':')[0]})"


def _shares(counts: collections.Counter[str], total: int, count: int) -> str:
    return ", ".join(
        f"{name.replace(' (', ' ').rstrip(')')} {100 * n / (total or 1):.0f}%"
        for name, n in counts.most_common(count)
    )
