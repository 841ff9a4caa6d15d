"""``accel up``'s supervisor (accel.supervisor) over real child processes: a part that
dies is restarted with the same arguments and listening socket, one that keeps dying
is given up on, and stopping goes last started first, killing what will not stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from accel.sockets import bind
from accel.supervisor import Part, Supervisor
from tests.processes import wait_until

# Serves one connection on the inherited socket argv[1] with its pid, then dies.
SERVES_ONCE = """
import os, sys
from accel.sockets import adopt
connection, _ = adopt(int(sys.argv[1])).accept()
connection.sendall(str(os.getpid()).encode())
connection.close()
sys.exit(1)
"""
DIES = "import sys; print('starting', flush=True); sys.exit(3)"
# Writes its name (argv[1]) to argv[2] on SIGTERM, or ignores SIGTERM if argv[3] says
# so; touches argv[2].ready once its handler is in place.
WAITS = """
import signal, sys, time
from pathlib import Path
name, record, mode = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
def stop(*_):
    with record.open("a") as out:
        out.write(name + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else stop)
Path(f"{record}.{name}.ready").touch()
time.sleep(60)
"""


class Recorded:
    """A supervisor over ``tmp_path``, with the events it reported."""

    def __init__(self, tmp_path: Path, max_restarts: int = 5, window: float = 60.0) -> None:
        self.events: list[str] = []
        self.supervisor = Supervisor(
            [],
            tmp_path / "logs",
            dict(os.environ),
            max_restarts=max_restarts,
            restart_window=window,
            on_event=self.events.append,
        )

    def run(self, name: str, script: str, *args: object, fds: tuple[int, ...] = ()) -> Part:
        part = Part(name, [sys.executable, "-c", script, *map(str, args)], pass_fds=fds)
        self.supervisor.parts.append(part)
        self.supervisor.start(part)
        return part


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Recorded]:
    found = Recorded(tmp_path)
    yield found
    found.supervisor.stop(timeout=5)


def exited(part: Part) -> bool:
    return part.process is not None and part.process.poll() is not None


def checked_after_deaths(recorded: Recorded, part: Part, deaths: int) -> None:
    """Lets ``part`` die ``deaths`` times, the supervisor checking after each."""
    for _ in range(deaths):
        wait_until(lambda: exited(part), "the part to exit")
        recorded.supervisor.check()


def pid_served(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.settimeout(30)
        return int(connection.recv(32))


def test_a_part_that_dies_is_restarted_at_the_same_address(
    recorded: Recorded, tmp_path: Path
) -> None:
    with bind("127.0.0.1:0") as sock:
        port = sock.getsockname()[1]
        part = recorded.run("conductor", SERVES_ONCE, sock.fileno(), fds=(sock.fileno(),))
        first = pid_served(port)
        wait_until(lambda: exited(part), "the part to exit")
        recorded.supervisor.check()
        assert recorded.events == ["conductor exited (1); restarting it"]
        second = pid_served(port)  # the same socket, handed to the new process
    assert first != second
    assert part.process is not None and part.process.pid == second
    pids = json.loads((tmp_path / "parts.json").read_text())
    assert pids == {"conductor": second}
    assert not (tmp_path / "parts.json.tmp").exists()


def test_a_part_that_keeps_dying_is_given_up_on_and_its_log_kept(tmp_path: Path) -> None:
    recorded = Recorded(tmp_path, max_restarts=2, window=3600)
    part = recorded.run("api", DIES)
    checked_after_deaths(recorded, part, 3)
    log = tmp_path / "logs" / "api.log"
    assert recorded.events == [
        "api exited (3); restarting it",
        "api exited (3); restarting it",
        f"api exited (3) 2 times in 3600s; not restarting it (see {log})",
    ]
    assert part.given_up
    last = part.process
    recorded.supervisor.check()
    assert part.process is last and len(recorded.events) == 3  # left alone from now on
    # Every run's output, appended: what an operator reads to learn why.
    assert recorded.supervisor.log_tail(part) == ["starting"] * 3
    assert recorded.supervisor.log_tail(part, lines=1) == ["starting"]
    assert recorded.supervisor.log_tail(Part("never-started", [])) == []


def test_deaths_older_than_the_window_are_forgiven(tmp_path: Path) -> None:
    recorded = Recorded(tmp_path, max_restarts=1, window=0)
    part = recorded.run("agent", DIES)
    checked_after_deaths(recorded, part, 3)
    assert not part.given_up
    assert recorded.events == ["agent exited (3); restarting it"] * 3
    recorded.supervisor.stop(timeout=5)


def test_stopping_goes_last_started_first_and_restarts_nothing(
    recorded: Recorded, tmp_path: Path
) -> None:
    record = tmp_path / "stopped"
    parts = [recorded.run(name, WAITS, name, record, "stop") for name in ("conductor", "api")]
    for part in parts:
        wait_until(Path(f"{record}.{part.name}.ready").exists, f"{part.name} ready")
    recorded.supervisor.stop(timeout=30)
    assert record.read_text().split() == ["api", "conductor"]
    assert all(part.process is not None and part.process.returncode == 0 for part in parts)
    recorded.supervisor.check()
    assert recorded.events == [] and all(exited(part) for part in parts)


def test_a_part_that_ignores_sigterm_is_killed(recorded: Recorded, tmp_path: Path) -> None:
    record = tmp_path / "stopped"
    part = recorded.run("stubborn", WAITS, "stubborn", record, "ignore")
    wait_until(Path(f"{record}.stubborn.ready").exists, "the part ready")
    recorded.supervisor.stop(timeout=0.5)
    assert recorded.events == ["stubborn did not stop in 0.5s; killing it"]
    assert part.process is not None and part.process.returncode == -signal.SIGKILL
    assert not record.exists()
