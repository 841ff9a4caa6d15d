"""The conductor's part of the setup call: accept an operation, then see it through.

The api asks ``POST /v1/operations``; the operation is stored PENDING and this
conductor's loop sends it to the node's agent, which hands it to the driver, and
then polls its progress until it is final, writing each step to the database. The
loop is driven by the database, not by memory: a restarted conductor picks up its
unfinished operations, and a live conductor takes over those of a dead one. A node
that stays unreachable costs the operation its ``setup_timeout``, never a hang.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import anyio
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.conductor import operations
from accel.db.columns import utcnow
from accel.db.commit_deadline import TooLate, parse_commit_before
from accel.errors import PeerError, PeerRefused, Unavailable
from accel.internal.client import InternalClient
from accel.internal.gate import require
from accel.internal.schemas import COMMIT_BEFORE
from accel.internal.setup_schemas import OperationRequest
from accel.internal.versions import Feature, VersionRange
from accel.states import OPERATION_FINAL, OperationState
from accel.web.bodies import read_body
from accel.web.queries import only_params

log = logging.getLogger(__name__)

# A node that forgets an operation this often (a driver crashing on it) fails it.
MAX_RESENDS = 3


@dataclass(frozen=True)
class SetupSettings:
    conductor: str
    versions: VersionRange
    poll_interval: float = 0.5
    # A node silent for this long fails the operation rather than keep it forever.
    unreachable_for: float = 300.0


class SetupRunner:
    def __init__(
        self,
        sessions: sessionmaker[Session],
        client: Callable[[], InternalClient],
        settings: SetupSettings,
    ) -> None:
        self.sessions = sessions
        self.client = client
        self.settings = settings
        self.wake = asyncio.Event()
        self._unreachable_since: dict[str, dt.datetime] = {}
        self._resends: dict[str, int] = {}

    async def accept(self, request: Request) -> Response:
        """``POST /v1/operations``: the api's request, stored and answered 202."""
        require(request, Feature.SETUP, "setup", self.settings.versions)
        only_params(request)
        asked = await read_body(request, OperationRequest)
        commit_before = parse_commit_before(request.headers.get(COMMIT_BEFORE))
        try:
            view = await anyio.to_thread.run_sync(
                operations.accept,
                self.sessions,
                asked,
                self.settings.conductor,
                utcnow(),
                commit_before,
            )
        except TooLate as exc:
            raise Unavailable(f"{exc}; no operation was started") from exc
        log.info(
            "operation %s: %s%s on device %s (%s on %s), asked by %s of project %s",
            view.uuid,
            view.action,
            " (dry run)" if view.dry_run else "",
            view.device_uuid,
            view.address,
            view.hostname,
            asked.requested_by or "an unnamed caller",
            asked.project_id or "-",
        )
        self.wake.set()
        return JSONResponse(view.model_dump(mode="json"), status_code=202)

    async def drive_forever(self) -> None:
        while True:
            try:
                work = await anyio.to_thread.run_sync(
                    operations.unfinished, self.sessions, self.settings.conductor, utcnow()
                )
                await asyncio.gather(*(self._step(item) for item in work))
            # Any database error, away or not: the loop lives on, the next round retries.
            except SQLAlchemyError as exc:
                log.warning("setup operations not driven this round, database error: %s", exc)
            self.wake.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self.wake.wait()

    async def _step(self, work: operations.OperationWork) -> None:
        """One step of one operation: send it, or ask how it goes."""
        client = self.client()
        try:
            if work.state == OperationState.PENDING:
                progress = await client.setup(work.agent_endpoint, work.call)
            else:
                try:
                    progress = await client.setup_progress(work.agent_endpoint, work.uuid)
                except PeerRefused as refused:
                    if refused.status_code != 404:
                        raise
                    # The node restarted and forgot it: run it again (sysfs writes and
                    # programming are safe to repeat), a bounded number of times.
                    resent = self._resends.get(work.uuid, 0) + 1
                    if resent > MAX_RESENDS:
                        await self._fail(
                            work.uuid,
                            f"the node lost the operation {MAX_RESENDS} times "
                            "(its driver keeps restarting?)",
                        )
                        return
                    self._resends[work.uuid] = resent
                    progress = await client.setup(work.agent_endpoint, work.call)
        except PeerRefused as refused:
            log.warning("operation %s refused by the node: %s", work.uuid, refused.message)
            await self._fail(work.uuid, refused.message)
            return
        except PeerError as exc:
            await self._unreachable(work, exc)
            return
        self._unreachable_since.pop(work.uuid, None)
        await anyio.to_thread.run_sync(
            operations.record_progress, self.sessions, progress, utcnow()
        )
        if progress.state in OPERATION_FINAL:
            self._forget(work.uuid)
            log.info("operation %s %s", work.uuid, progress.state)

    async def _unreachable(self, work: operations.OperationWork, exc: PeerError) -> None:
        now = utcnow()
        since = self._unreachable_since.setdefault(work.uuid, now)
        if (now - since).total_seconds() < self.settings.unreachable_for:
            log.warning("operation %s: node unreachable, will retry: %s", work.uuid, exc)
            return
        await self._fail(
            work.uuid,
            f"the node did not answer for {self.settings.unreachable_for:g}s: {exc.message}",
        )

    def _forget(self, uuid: str) -> None:
        self._unreachable_since.pop(uuid, None)
        self._resends.pop(uuid, None)

    async def _fail(self, uuid: str, reason: str) -> None:
        self._forget(uuid)
        await anyio.to_thread.run_sync(operations.fail, self.sessions, uuid, reason, utcnow())
