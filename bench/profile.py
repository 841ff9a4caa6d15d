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

    def top(self, count: int = 5) -> str:
        """``function (file:line) share%, ...`` for the busiest functions, or ''."""
        if not self.output.exists():
            return ""
        own: collections.Counter[str] = collections.Counter()
        for line in self.output.read_text().splitlines():
            stack, _, samples = line.rpartition(" ")
            if not samples.isdigit() or not stack:
                continue
            leaf = stack.split(";")[-1]
            if any(marker in leaf for marker in IDLE):
                continue
            own[leaf] += int(samples)
        total = sum(own.values()) or 1
        self._folder.cleanup()
        return ", ".join(
            f"{name.replace(' (', ' ').rstrip(')')} {100 * n / total:.0f}%"
            for name, n in own.most_common(count)
        )
