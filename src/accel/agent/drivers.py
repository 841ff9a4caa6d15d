"""The node's drivers, one per kind: where each answers, and when the set last changed.

A driver that restarted on a new port (``--listen :0``) replaces its old
registration; a second live driver of a kind is refused, since two took turns and
the node's hardware of that kind vanished and came back at every hello.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from accel.errors import Conflict
from accel.internal.client import InternalClient
from accel.internal.identity import answers_as
from accel.internal.schemas import Kind

log = logging.getLogger(__name__)


@dataclass
class RegisteredDriver:
    kind: Kind
    endpoint: str
    registered_at: float = field(default_factory=time.time)
    last_hello: float = field(default_factory=time.time)


class DriverRegistry:
    def __init__(self, client: Callable[[], InternalClient]) -> None:
        self._drivers: dict[Kind, RegisteredDriver] = {}
        self._client = client
        # Bumped on every registration: a discovery made before it is stale.
        self.version = 0

    def get(self, kind: Kind) -> RegisteredDriver | None:
        return self._drivers.get(kind)

    def all(self) -> list[RegisteredDriver]:
        return list(self._drivers.values())

    async def register(self, kind: Kind, endpoint: str) -> bool:
        """Records a driver's hello; whether it was known there already. Conflict if
        another driver of the kind is live at another endpoint."""
        current = self._drivers.get(kind)
        if current is not None and current.endpoint == endpoint:
            current.last_hello = time.time()
            return True
        if current is not None and await answers_as(
            self._client(), current.endpoint, component="driver", kind=kind.value
        ):
            log.warning("a second %s driver at %s is refused", kind.value, endpoint)
            raise Conflict(
                f"the {kind.value} driver of this node is the live one at "
                f"{current.endpoint}; stop one of them"
            )
        self._drivers[kind] = RegisteredDriver(kind, endpoint)
        self.version += 1
        log.info("driver %s registered at %s", kind.value, endpoint)
        return False
