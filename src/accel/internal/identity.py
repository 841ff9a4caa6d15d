"""Asking an endpoint who answers there: a second process that claims a live one's place.

Names and kinds are one per place (an agent's name in the fleet, a conductor's name,
a driver's kind on its node), and a process that restarted on a new port (``:0``)
claims its own old place. Which of the two a claim is, only the old endpoint can
tell: the live holder answers ``GET /`` as itself; a dead process's port refuses at
once, and a vanished host costs PROBE_SECONDS.
"""

from __future__ import annotations

import asyncio

from accel.errors import PeerError
from accel.internal.client import InternalClient

PROBE_SECONDS = 3.0


async def answers_as(client: InternalClient, endpoint: str, **facts: str) -> bool:
    """Whether ``endpoint`` answers ``GET /`` with every one of ``facts`` (such as
    ``component="agent", name="node1"``) within PROBE_SECONDS."""
    try:
        async with asyncio.timeout(PROBE_SECONDS):
            found = await client.identify(endpoint)
    except (PeerError, TimeoutError):
        return False
    return all(found.get(key) == value for key, value in facts.items())
