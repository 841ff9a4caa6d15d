"""Since when a conductor could hear its agents: no silence counts from before that.

An agent is DOWN when no hello reached the conductors for ``--agent-down-after``. A
conductor that was not there to hear hellos cannot tell silence from its own
absence, so it judges silence only over time it was listening without a gap: from
its start, and again from the end of each stretch in which a hello could not have
been recorded, which it notices as

- a database error in its liveness sweep or while recording a hello, and
- a sweep that woke far later than it asked to: the process was stopped (SIGSTOP, a
  frozen virtual machine) or its event loop stalled, and hellos waited unread.

Several conductors share the agents' ``last_seen``: a hello any of them recorded
counts for all, and each judges only over its own listening time.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Hearing:
    def __init__(self, down_after: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.down_after = down_after
        self._clock = clock
        self._since = clock()
        # A sweep this much later than planned means hellos may have waited unheard
        # long enough to matter: a quarter of the grace, and at least a second, so
        # that an event loop merely busy does not keep restarting the grace.
        self.max_lag = max(1.0, down_after / 4)

    def restart(self) -> None:
        """Hellos could not be heard or recorded until now: the grace starts again."""
        self._since = self._clock()

    def woke(self, planned: float) -> None:
        """A sweep planned for ``planned`` (the clock's time) runs now."""
        if self._clock() - planned > self.max_lag:
            self.restart()

    def may_judge(self) -> bool:
        """Whether this conductor has listened for a whole ``down_after`` by now."""
        return self._clock() - self._since >= self.down_after

    def now(self) -> float:
        return self._clock()
