"""When an agent says its next hello: on its own beat in the interval, or after a
spread-out backoff while no conductor answers.

Agents that start together (a rack powering up, a fleet simulator, every agent
failing over when a conductor dies) would otherwise keep saying hello together,
one interval apart, for as long as they run: a burst at the conductor every
interval, and on a shared machine every node's discovery at the same instant.
Each agent instead keeps a phase of its own in the interval, taken from its name,
so a fleet's heartbeats spread evenly over the interval whenever its agents began.
"""

from __future__ import annotations

import hashlib
import random


def hello_pause(heartbeat_interval: float, failures: int) -> float:
    """Seconds until the next hello after ``failures`` unanswered rounds in a row.

    Unanswered hellos are retried soon, then less and less often (up to the
    heartbeat interval), each agent at a random point of its window: a fleet whose
    conductors were away must not come back all at once, every second, and keep
    them overloaded (5,000 simulated agents did exactly that).
    """
    if failures == 0:
        return heartbeat_interval
    window = min(heartbeat_interval, 0.5 * 2 ** min(failures, 16))
    return random.uniform(window / 2, window)


def heartbeat_phase(name: str, heartbeat_interval: float) -> float:
    """Where in each interval (seconds past a multiple of it, by the wall clock) the
    agent called ``name`` says hello: the same on every start, spread by its name."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * heartbeat_interval


def next_heartbeat(heartbeat_interval: float, phase: float, now: float) -> float:
    """Seconds from ``now`` (wall clock) to the agent's next beat at ``phase``.

    At least a quarter interval away: an agent that just registered off its beat
    does not say hello twice in a row, and no two hellos are more than an interval
    and a quarter apart (``--agent-down-after`` is several intervals).
    """
    pause = (phase - now) % heartbeat_interval
    if pause < heartbeat_interval / 4:
        pause += heartbeat_interval
    return pause
