"""Nova's external events after binds: an outbox written with the bind, sent after it.

Nova's compute waits (``arq_binding_timeout``, 300 s) for an
``accelerator-request-bound`` event per ARQ of the instance it builds. Once every ARQ
of an instance is Bound or BindFailed, the bind's own transaction writes one row
(``queue_bound_events``); a loop in every conductor (``NovaNotifier``) claims due rows
and POSTs each to Nova's ``/os-server-external-events`` at compute 2.82, after the
commit and never inside the bind. A conductor killed between the two leaves the row
due, and whichever conductor runs next sends it. Each try has a timeout; a failed
one is tried again later with backoff, a bounded number of times; every row ends
sent or failed. A try's outcome that meets the database away is kept and stored
once it is back, before anything is claimed again, so Nova is not sent it twice
for that. Delivery is at least once: a conductor stopped or killed between Nova's
answer and its write, or one whose claim lapsed while the database was away and
another conductor took the row, leaves it to be sent again (Nova logs and ignores an event
for an instance no longer waiting on it).

Nova's answers (``judge``): 200 is done (if it has a body, it must be Nova's events),
and so is a 207 whose events are each 200 or 422 (422 is Nova's known race: the
instance has no host yet; its compute polls the ARQs as well). Any other 207, a 400
or a 404 (no such instance) is Nova's refusal: final. Anything else (no connection, a
timeout, 5xx, 401/403 with a token that may be renewed, an answer that cannot be
read) is tried again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple

import anyio
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from accel.db.columns import utcnow
from accel.db.models import AcceleratorRequest, NovaEvent
from accel.db.outage import DATABASE_AWAY
from accel.metrics import NOVA_EVENTS
from accel.states import ArqState, NovaEventState
from accel.thread_calls import ThreadCalls
from accel.web.json_bodies import loads

if TYPE_CHECKING:
    from accel.openstack.credentials import OpenStackCredentials

log = logging.getLogger(__name__)

EVENT_NAME = "accelerator-request-bound"
COMPUTE_MICROVERSION = "2.82"  # the first that knows accelerator-request-bound
EVENTS_PATH = "/os-server-external-events"
EVENT_STATUS = {ArqState.BOUND: "completed", ArqState.BIND_FAILED: "failed"}

Outcome = Literal["sent", "rejected", "retry"]
FINAL_REFUSALS = frozenset({400, 404})
KEPT_FOR = dt.timedelta(days=1)  # sent or failed rows, for an operator to look at
MAX_ERROR_CHARS = 500
SEND_THREADS = 8


@dataclass(frozen=True)
class NovaSettings:
    """Where Nova is and how hard to try. ``url`` None: the Keystone catalog's."""

    url: str | None
    timeout: float = 10.0
    # Tries per event; backoff doubles from ``retry_delay`` up to ``max_delay``. The
    # defaults give up after about two minutes, well inside Nova's 300 s wait.
    attempts: int = 8
    retry_delay: float = 1.0
    max_delay: float = 60.0
    poll: float = 2.0
    batch: int = 32

    def backoff(self, attempt: int) -> float:
        return float(min(self.max_delay, self.retry_delay * 2 ** (attempt - 1)))


def queue_bound_events(session: Session, instances: Iterable[str], now: dt.datetime) -> int:
    """In the bind's transaction: one outbox row per instance whose ARQs are now all
    Bound or BindFailed. Returns how many rows it wrote."""
    wanted = sorted(set(instances))
    if not wanted:
        return 0
    by_instance: dict[str, list[tuple[str, ArqState]]] = defaultdict(list)
    for instance, arq_uuid, state in session.execute(
        select(AcceleratorRequest.instance_uuid, AcceleratorRequest.uuid, AcceleratorRequest.state)
        .where(AcceleratorRequest.instance_uuid.in_(wanted))
        .order_by(AcceleratorRequest.id)
    ):
        by_instance[str(instance)].append((arq_uuid, state))
    rows = [
        {
            "instance_uuid": instance,
            "events_json": json.dumps([[arq, EVENT_STATUS[state]] for arq, state in arqs]),
            "state": NovaEventState.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for instance, arqs in by_instance.items()
        if all(state in EVENT_STATUS for _, state in arqs)
    ]
    if rows:
        session.execute(insert(NovaEvent), rows)
    return len(rows)


def event_body(instance: str, events_json: str) -> dict[str, list[dict[str, str]]]:
    return {
        "events": [
            {"name": EVENT_NAME, "server_uuid": instance, "tag": arq, "status": status}
            for arq, status in json.loads(events_json)
        ]
    }


def judge(status: int, content: bytes) -> tuple[Outcome, str | None]:
    """What Nova's answer means for the row, and the error to keep if any."""
    if status == 200 and not content.strip():
        return "sent", None
    if status in (200, 207):
        # A 200 whose body is not Nova's (a portal's HTML page, a proxy's garbage) did
        # not come from Nova: the events are not known to have arrived.
        try:
            codes = {int(event["code"]) for event in loads(content)["events"]}
        except (ValueError, KeyError, TypeError) as exc:
            return "retry", f"Nova answered {status} with events accel cannot read: {exc!r:.200}"
        if codes <= {200, 422}:
            return "sent", None
        return "rejected", f"Nova refused events: codes {sorted(codes)}"
    text = content[:200].decode("utf-8", "replace")
    if status in FINAL_REFUSALS:
        return "rejected", f"Nova answered {status}: {text}"
    return "retry", f"Nova answered {status}: {text}"


@dataclass(frozen=True)
class Due:
    id: int
    instance_uuid: str
    events_json: str
    attempt: int


def claim_due(
    sessions: sessionmaker[Session], now: dt.datetime, claim_for: float, limit: int
) -> list[Due]:
    """Takes due rows for this conductor: each moved ``claim_for`` seconds on, so no
    other conductor sends it meanwhile, and comes due again if this one dies."""
    with sessions.begin() as session:
        rows = session.execute(
            select(NovaEvent.id, NovaEvent.instance_uuid, NovaEvent.events_json, NovaEvent.attempts)
            .where(NovaEvent.state == NovaEventState.PENDING, NovaEvent.next_attempt_at <= now)
            .order_by(NovaEvent.next_attempt_at)
            .limit(limit)
        ).all()
        claimed = []
        for row in rows:
            # attempts is the row's version: of two conductors, one moves it on.
            taken = session.execute(
                update(NovaEvent)
                .where(
                    NovaEvent.id == row.id,
                    NovaEvent.state == NovaEventState.PENDING,
                    NovaEvent.attempts == row.attempts,
                )
                .values(
                    attempts=row.attempts + 1,
                    next_attempt_at=now + dt.timedelta(seconds=claim_for),
                    updated_at=now,
                )
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(Due(row.id, row.instance_uuid, row.events_json, row.attempts + 1))
    return claimed


def record(
    sessions: sessionmaker[Session],
    due: Due,
    outcome: Outcome,
    error: str | None,
    settings: NovaSettings,
    now: dt.datetime,
) -> NovaEventState:
    """Stores what became of one try; the row's state after it."""
    values: dict[str, object] = {"updated_at": now, "last_error": error}
    if outcome == "sent":
        values["state"] = NovaEventState.SENT
    elif outcome == "rejected" or due.attempt >= settings.attempts:
        values["state"] = NovaEventState.FAILED
    else:
        values["next_attempt_at"] = now + dt.timedelta(seconds=settings.backoff(due.attempt))
    with sessions.begin() as session:
        session.execute(
            update(NovaEvent)
            .where(NovaEvent.id == due.id, NovaEvent.attempts == due.attempt)
            .values(**values)
        )
    state = values.get("state", NovaEventState.PENDING)
    assert isinstance(state, NovaEventState)
    return state


def forget_old(sessions: sessionmaker[Session], now: dt.datetime) -> None:
    with sessions.begin() as session:
        session.execute(
            delete(NovaEvent).where(
                NovaEvent.state.in_((NovaEventState.SENT, NovaEventState.FAILED)),
                NovaEvent.updated_at < now - KEPT_FOR,
            )
        )


class Tried(NamedTuple):
    """One try of a row, and what became of it."""

    due: Due
    outcome: Outcome
    error: str | None


Post = Callable[[dict[str, list[dict[str, str]]]], tuple[int, bytes]]


def keystoneauth_post(credentials: OpenStackCredentials, settings: NovaSettings) -> Post:
    """POSTs events through keystoneauth1 (token, catalog), one HTTP call per try: the
    outbox, not the adapter, retries, so a try never outlasts the timeout."""
    from keystoneauth1.exceptions import ClientException

    from accel.openstack.credentials import make_adapter, make_session

    once = dataclasses.replace(credentials, retries=0, timeout=settings.timeout)
    adapter = make_adapter(
        make_session(once), once, "compute", settings.url, microversion=COMPUTE_MICROVERSION
    )

    def post(body: dict[str, list[dict[str, str]]]) -> tuple[int, bytes]:
        try:
            response = adapter.post(EVENTS_PATH, json=body)
        except ClientException as exc:
            raise ConnectionError(str(exc)) from exc
        except RecursionError as exc:  # Keystone's token answer nested too deep
            raise ConnectionError("an answer nested too deep to read") from exc
        return response.status_code, response.content

    return post


class NovaNotifier:
    """Sends the outbox's due rows to Nova: woken after a bind, else every ``poll``."""

    def __init__(self, sessions: sessionmaker[Session], post: Post, settings: NovaSettings) -> None:
        self.sessions = sessions
        self.post = post
        self.settings = settings
        self._wake = asyncio.Event()
        # Its own threads: a Nova that hangs holds these, never the ones binds and
        # syncs use (anyio's default limiter).
        self._limiter = anyio.CapacityLimiter(SEND_THREADS)
        self._threads = ThreadCalls()
        # Tries whose outcome could not be stored (the database away), by row: at most
        # the rows claimed before it went, since nothing is claimed until they are stored.
        self._unstored: dict[int, Tried] = {}

    def wake(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        try:
            await self._run()
        finally:
            # A send cancelled here is not recorded: its row comes due again once its
            # claim lapses, and is sent again (at least once, never lost).
            await self._threads.settle()

    async def _run(self) -> None:
        forgotten = 0.0
        while True:
            self._wake.clear()
            try:
                await self.send_due()
                if time.monotonic() - forgotten > 60:
                    forgotten = time.monotonic()
                    await self._threads.run(forget_old, self.sessions, utcnow())
            except SQLAlchemyError as exc:
                log.warning("Nova's events not looked at, database error: %s", exc)
            except Exception:  # the loop outlives any one failure; rows stay due
                log.exception("Nova's events: unexpected failure")
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll)

    async def send_due(self) -> None:
        # A claim outlasts a try (its timeout) with room to record it.
        claim_for = 2 * self.settings.timeout + 1
        await self._store_unstored()
        while True:
            due = await self._threads.run(
                claim_due, self.sessions, utcnow(), claim_for, self.settings.batch
            )
            if not due:
                return
            await asyncio.gather(*(self._send(row) for row in due))
            if len(due) < self.settings.batch:
                return

    async def _send(self, due: Due) -> None:
        body = event_body(due.instance_uuid, due.events_json)
        try:
            status, content = await self._threads.run(self.post, body, limiter=self._limiter)
            outcome, error = judge(status, content)
        except OSError as exc:
            outcome, error = "retry", f"Nova cannot be reached: {exc}"
        except Exception as exc:
            # Whatever a try raised, it is recorded: the row ends sent or failed, never
            # claimed again and again without a count.
            log.exception("Nova's events: unexpected failure of a try")
            outcome, error = "retry", f"unexpected failure: {exc!r}"
        error = error[:MAX_ERROR_CHARS] if error else None
        try:
            await self._record(Tried(due, outcome, error))
        except DATABASE_AWAY as exc:
            # Nova has had its try; a row left as claimed would be sent again once its
            # claim lapses. Kept, it is stored before anything is claimed again.
            self._unstored[due.id] = Tried(due, outcome, error)
            log.warning(
                "Nova's events for instance %s, try %d (%s): not stored yet, database away: %s",
                due.instance_uuid,
                due.attempt,
                outcome,
                exc,
            )

    async def _store_unstored(self) -> None:
        """Stores the tries whose outcome met a database away; raises while it still is."""
        for row, tried in list(self._unstored.items()):
            await self._record(tried)
            del self._unstored[row]

    async def _record(self, tried: Tried) -> None:
        due, outcome, error = tried
        state = await self._threads.run(
            record, self.sessions, due, outcome, error, self.settings, utcnow()
        )
        if state == NovaEventState.FAILED and outcome == "retry":
            outcome_label = "gave_up"
        else:
            outcome_label = outcome
        NOVA_EVENTS.labels(outcome_label).inc()
        if state == NovaEventState.FAILED:
            log.error(
                "Nova's events for instance %s given up after try %d: %s",
                due.instance_uuid,
                due.attempt,
                error,
            )
        elif outcome == "retry":
            log.warning(
                "Nova's events for instance %s, try %d: %s", due.instance_uuid, due.attempt, error
            )
