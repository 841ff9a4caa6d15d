"""``accel up``: the whole stack as separate processes, restarted when a part dies."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from accel.states import AgentState
from tests.processes import run_accel, wait_until

EXAMPLE_TREE = Path(__file__).parents[2] / "examples" / "gpu-server"


@dataclass
class RunningUp:
    process: subprocess.Popen[str]
    lines: queue.Queue[str]
    output: list[str]
    state_dir: Path
    api_url: str = ""

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = json.loads((self.state_dir / "parts.json").read_text())
        return pids

    def explain(self) -> str:
        """What accel up printed and the end of each part's log."""
        parts = [
            f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            for log in sorted((self.state_dir / "logs").glob("*.log"))
        ]
        return "".join(self.output) + "\n".join(parts)

    def wait_for_line(self, pattern: str) -> re.Match[str]:
        def next_match() -> re.Match[str] | None:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                return None
            self.output.append(line)
            return re.search(pattern, line)

        return wait_until(
            next_match,
            f"accel up to print {pattern!r}",
            timeout=90,  # under pytest-timeout, so that the logs are shown
            on_timeout=self.explain,
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[RunningUp]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "accel",
            "up",
            "--state-dir",
            str(tmp_path / "state"),
            "--sysfs-root",
            str(EXAMPLE_TREE),
            "--api-listen",
            "127.0.0.1:0",
            "--heartbeat-interval",
            "0.5",
            "--name",
            "demo",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert process.stdout is not None
    stdout = process.stdout

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    running = RunningUp(process, lines, [], tmp_path / "state")
    try:
        yield running
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pid in _pids_or_empty(running):
            _kill_quietly(pid)
        reader.join(5)
        if process.stdout is not None:
            process.stdout.close()


def _pids_or_empty(running: RunningUp) -> list[int]:
    try:
        return list(running.pids().values())
    except (OSError, ValueError):
        return []


def _kill_quietly(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie that its parent has not reaped yet is not alive either.
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" not in status


def test_up_serves_the_example_tree_restarts_a_dead_part_and_stops_cleanly(
    stack: RunningUp,
) -> None:
    stack.wait_for_line(r"reading hardware from .*gpu-server \(as given by --sysfs-root\)")
    stack.api_url = stack.wait_for_line(r"the API is at (http://\S+)").group(1)
    assert any("found 10 devices" in line for line in stack.output)

    listed = run_accel("hardware", "list", "--api-url", stack.api_url, "--json")
    assert listed.returncode == 0, listed.stderr
    hardware = json.loads(listed.stdout)
    assert len(hardware) == 10 and {h["node"] for h in hardware} == {"demo"}
    table = run_accel("agents", "list", "--api-url", stack.api_url)
    assert "demo" in table.stdout and AgentState.UP in table.stdout

    first_agent = stack.pids()["agent"]
    os.kill(first_agent, signal.SIGKILL)
    stack.wait_for_line(r"agent exited \(-9\); restarting it")
    wait_until(lambda: stack.pids()["agent"] != first_agent, "the agent's new pid")
    restarted = stack.pids()
    seen_before = _agent(stack)["last_seen"]
    wait_until(
        lambda: (
            _agent(stack)["last_seen"] > seen_before and _agent(stack)["state"] == AgentState.UP
        ),
        "the restarted agent's heartbeat",
    )

    stack.process.send_signal(signal.SIGTERM)
    assert stack.process.wait(60) == 0
    stack.wait_for_line(r"accel up: stopped")
    assert not [name for name, pid in restarted.items() if _alive(pid)]


def _agent(stack: RunningUp) -> dict[str, str]:
    [agent] = httpx.get(stack.api_url + "/v2/agents", timeout=5).json()["agents"]
    return dict(agent)


def test_operator_commands_explain_an_unreachable_api() -> None:
    result = run_accel("alarms", "list", "--api-url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach the API at http://127.0.0.1:9" in result.stderr
