"""Agent names held by live agents: a second agent of one name is refused, not let in.

An agent's name defaults to its host's, and machines cloned from one image share
one; two agents of one name took turns, the stored endpoint flipping at every
heartbeat and each node's hardware vanishing and coming back. A hello that names an
agent heard within ``--agent-down-after`` at another endpoint is either that agent
restarted on a new port (``--listen :0``), its old process gone, or a second agent.
The conductor asks the old endpoint who it is (``GET /``, within a few seconds:
accel.internal.identity): an agent of that name there holds the name, and the hello
is refused (409) with an ``agent_name_clash`` alarm; no answer, or another
name, means the agent moved, and its hello is taken.

The alarm clears once no hello was refused for ``--agent-down-after``; this
conductor keeps the time of the last refusal, so an alarm raised by a conductor that
has since stopped clears when another one refuses the name and then stops hearing it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio.to_thread
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import NameHeld
from accel.conductor.alarms import clear_alarms, raise_alarm
from accel.db.columns import utcnow
from accel.errors import Conflict
from accel.internal.client import InternalClient
from accel.internal.identity import answers_as
from accel.states import AlarmKind

log = logging.getLogger(__name__)


class NameGuard:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: Callable[[], InternalClient],
        quiet_after: float,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.quiet_after = quiet_after
        # Name -> when (time.monotonic()) a hello naming it was last refused.
        self._refused: dict[str, float] = {}

    async def check(self, held: NameHeld, endpoint: str) -> None:
        """Returns if the agent that held the name is gone; Conflict if it is live."""
        if not await self._answers_as(held.endpoint, held.name):
            log.info("agent %s moved from %s to %s", held.name, held.endpoint, endpoint)
            return
        self._refused[held.name] = time.monotonic()
        message = (
            f"an agent at {endpoint} says it is {held.name}, which the live agent at "
            f"{held.endpoint} is: its hellos are refused; give one of them another --name"
        )
        log.warning("%s", message)
        await anyio.to_thread.run_sync(self._raise, held.name, message)
        raise Conflict(
            f"agent name {held.name} is held by a live agent at {held.endpoint}; "
            "give this node another --name"
        )

    async def _answers_as(self, endpoint: str, name: str) -> bool:
        return await answers_as(self.client(), endpoint, component="agent", name=name)

    def _raise(self, name: str, message: str) -> None:
        with self.sessions.begin() as session:
            raise_alarm(session, AlarmKind.AGENT_NAME_CLASH, name, message, utcnow())

    async def clear_quiet(self) -> None:
        """Clears the alarms of names no hello was refused for lately."""
        cutoff = time.monotonic() - self.quiet_after
        quiet = [name for name, refused in self._refused.items() if refused < cutoff]
        if not quiet:
            return
        try:
            await anyio.to_thread.run_sync(self._clear, quiet)
        except SQLAlchemyError as exc:
            log.warning("name clash alarms not cleared, database error: %s", exc)
            return
        for name in quiet:
            self._refused.pop(name, None)

    def _clear(self, names: list[str]) -> None:
        with self.sessions.begin() as session:
            clear_alarms(session, AlarmKind.AGENT_NAME_CLASH, names, utcnow())
