"""How the api reaches a conductor for what only a conductor may do (binds, setup).

No flag names a conductor: each records its endpoint in the database and keeps it
fresh; the api tries the freshest ones in turn, each call with a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.requests import Request

from accel.api.queries import reader
from accel.db.columns import utcnow
from accel.db.commit_deadline import database_clock, lock_for_writing, locked_requests
from accel.db.conductor_liveness import worth_asking
from accel.db.engine import LOCK_NOT_AVAILABLE
from accel.db.models import AcceleratorRequest, Conductor, Device, Operation
from accel.db.operation_view import asked_since
from accel.errors import PeerError, PeerRefused, PeerTooOld, Unavailable
from accel.internal.arq_schemas import ArqChanges, ArqOutcome
from accel.internal.client import InternalClient
from accel.internal.setup_schemas import OperationRequest, OperationView
from accel.states import ARQ_HOLDING_NOTHING

log = logging.getLogger(__name__)

# Seconds of the database's clock a conductor has to commit a change it is asked for;
# the api waits a little longer for the answer, which must still travel back.
COMMIT_BUDGET = 10.0
ANSWER_MARGIN = 2.0
# Seconds between rounds of asking the live conductors again, while the budget lasts.
RETRY_PAUSE = 1.0
# How long the api waits, after giving up on the conductors, for a transaction that
# still holds a change's rows to end (a conductor's commit stalled after its deadline
# check: a frozen process, a slow disk, a synchronous standby that does not confirm).
LOOK_PATIENCE = 60.0
Answer = TypeVar("Answer")
Found = TypeVar("Found")


def live_conductors(session: Session) -> list[str]:
    return list(
        session.scalars(
            select(Conductor.endpoint)
            .where(worth_asking(utcnow()))
            .order_by(Conductor.last_seen.desc())
        )
    )


async def ask_conductor(
    request: Request, what: str, call: Callable[[InternalClient, str], Awaitable[Answer]]
) -> Answer:
    """``call`` on the freshest live conductor that answers; a refusal is an answer.

    A conductor that cannot be reached, or is too old for the call, is passed over
    for the next; one that refuses (a 4xx) speaks for all of them, and its status
    and reason reach the caller.
    """
    client: InternalClient | None = request.app.state.internal_client
    if client is None:
        raise Unavailable(
            "this api has no internal token (--internal-token-file or "
            f"ACCEL_INTERNAL_TOKEN), so it cannot ask a conductor to {what}"
        )
    endpoints = await reader(request).run(live_conductors)
    if not endpoints:
        raise Unavailable("no conductor has reported in during the last minute")
    failures = []
    for endpoint in endpoints:
        try:
            return await call(client, endpoint)
        except PeerTooOld as exc:
            failures.append(f"{endpoint}: {exc.message}")
        except PeerRefused:
            raise
        except PeerError as exc:
            log.warning("conductor %s could not %s: %s", endpoint, what, exc)
            # One that wraps a foreign error (the transport's, a parser's) speaks in
            # that library's words and class names: those go to the log only.
            failures.append(f"{endpoint}: no usable answer" if exc.__cause__ else exc.message)
    raise Unavailable(f"no conductor could {what} ({'; '.join(failures)}); the api's log says why")


async def change_arqs(request: Request, changes: ArqChanges) -> list[ArqOutcome]:
    """The conductor's outcomes of ``changes``; when no conductor answers, the database's.

    Each conductor asked is given until a time of the database's clock to commit the
    change (accel.db.commit_deadline). If none answers (killed, partitioned, its answer
    lost), the change may still have been made: the database is asked, and a change
    found done exactly as asked is a success. One not done by the last deadline never
    will be, and only then is the caller told it failed.
    """
    deadlines: list[float] = []

    async def change(client: InternalClient, endpoint: str) -> list[ArqOutcome]:
        commit_before = await reader(request).run(database_clock) + COMMIT_BUDGET
        deadlines.append(commit_before)
        answer = await client.change_arqs(
            endpoint, changes, commit_before, wait=COMMIT_BUDGET + ANSWER_MARGIN
        )
        return answer.arqs

    uuids = [str(b.arq_uuid) for b in changes.bind] + [*map(str, changes.unbind + changes.delete)]

    def done(session: Session) -> bool | None:
        return _as_asked(locked_requests(session, uuids), changes) or None

    started = time.monotonic()
    while True:
        try:
            return await ask_conductor(request, "change accelerator requests", change)
        except Unavailable as exc:
            if not deadlines:
                raise
            failed = exc
            with suppress(OutcomeUnknown):  # asked again below, and waited for then
                if await _fenced_look(request, max(deadlines), done, wait=False):
                    break
            # Asking again is safe (a change done as asked is answered, not redone),
            # and a conductor restarting, or a second one reporting in, answers soon.
            if time.monotonic() - started + RETRY_PAUSE >= COMMIT_BUDGET:
                break
            await asyncio.sleep(RETRY_PAUSE)
    try:
        made = await _fenced_look(request, max(deadlines), done)
    except OutcomeUnknown:
        raise Unavailable(
            f"{failed.message}; whether the change was made could not be read (the "
            "database is away or still busy with it): read the accelerator requests"
        ) from None
    if not made:
        raise Unavailable(f"{failed.message}; the change was not made")
    log.info("no conductor answered, but the database shows the change done as asked")
    return []


class OutcomeUnknown(Exception):
    """The api could not read what became of a change: its rows stayed locked past
    ``LOOK_PATIENCE`` (a commit stalled) or the database was away."""


def _held_by_another(exc: SQLAlchemyError) -> bool:
    """Whether a look failed only because another transaction holds the rows."""
    original = getattr(exc, "orig", None)
    if getattr(original, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return True
    return "database is locked" in str(original)


async def _fenced_look(
    request: Request, deadline: float, look: Callable[[Session], Found | None], wait: bool = True
) -> Found | None:
    """What ``look`` finds of a change, read under the locks a conductor commits under
    (so none can commit behind it): found as soon as the database shows it, None once
    ``deadline`` has passed without it (or at once, without ``wait``).

    A transaction that still holds the rows past the deadline checked the deadline in
    time and is committing, or rolling back: only its end says which, so the look waits
    for it (``LOOK_PATIENCE``) and raises OutcomeUnknown rather than answer "not done"
    from rows it could not read."""

    def locked_look(session: Session) -> tuple[Found | None, float]:
        lock_for_writing(session)
        found = look(session)
        return found, (0.0 if found is not None else deadline - database_clock(session))

    patient_until = time.monotonic() + LOOK_PATIENCE
    sleeps = 0
    while True:
        try:
            found, left = await reader(request).run(locked_look)
        except SQLAlchemyError as exc:
            # Each try waited the lock timeout (PostgreSQL) or busy timeout (SQLite).
            if wait and _held_by_another(exc) and time.monotonic() < patient_until:
                log.info("a change's rows are still held by another transaction; waiting")
                continue
            log.warning("could not read what became of a change: %s", exc)
            raise OutcomeUnknown(str(exc)) from exc
        if found is not None or left <= 0 or not wait:
            return found
        sleeps += 1
        if sleeps >= 3:  # the api's clock and the database's may run a little apart
            return None
        await asyncio.sleep(min(left, COMMIT_BUDGET))


def _as_asked(arqs: dict[str, AcceleratorRequest], changes: ArqChanges) -> bool:
    for binding in changes.bind:
        arq = arqs.get(str(binding.arq_uuid))
        asked = (binding.hostname, str(binding.device_rp_uuid), str(binding.instance_uuid))
        if arq is None or not arq.resolved_as(*asked):
            return False
    unbound = all(
        str(u) not in arqs or arqs[str(u)].state in ARQ_HOLDING_NOTHING for u in changes.unbind
    )
    return unbound and all(str(u) not in arqs for u in changes.delete)


async def request_operation(request: Request, asked: OperationRequest) -> OperationView:
    """The operation a conductor started for ``asked``, with deadlines as for binds.

    After a try whose answer was lost, the operation may have started: a later
    conductor's refusal ("already has an unfinished operation"), or no answer at all,
    is checked against the database, and the operation found is the answer."""
    tries: list[tuple[float, int]] = []  # each try's deadline, and the newest id before it

    def clock_and_newest(session: Session) -> tuple[float, int]:
        return database_clock(session), session.scalar(select(func.max(Operation.id))) or 0

    def started(session: Session) -> OperationView | None:
        session.scalar(  # the row a conductor locks while it stores the operation
            select(Device.id).where(Device.uuid == str(asked.device_uuid)).with_for_update()
        )
        return asked_since(session, asked, tries[0][1])

    async def start(client: InternalClient, endpoint: str) -> OperationView:
        now, newest = await reader(request).run(clock_and_newest)
        tries.append((now + COMMIT_BUDGET, newest))
        try:
            return await client.request_operation(
                endpoint, asked, now + COMMIT_BUDGET, wait=COMMIT_BUDGET + ANSWER_MARGIN
            )
        except PeerRefused as refused:
            if len(tries) > 1 and refused.status_code == 409:
                mine = await reader(request).run(lambda s: asked_since(s, asked, tries[0][1]))
                if mine is not None:
                    return mine
            raise

    try:
        return await ask_conductor(request, "start a setup operation", start)
    except Unavailable as failed:
        try:
            mine = await _fenced_look(request, max(t[0] for t in tries), started) if tries else None
        except OutcomeUnknown:
            raise Unavailable(
                f"{failed.message}; whether the operation was started could not be read "
                "(the database is away or still busy with it): list the device's operations"
            ) from None
        if mine is None:
            raise
        log.info("no conductor answered, but operation %s was started as asked", mine.uuid)
        return mine
