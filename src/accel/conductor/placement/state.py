"""Each node's Placement report as the database keeps it (``PlacementNode``).

Kept in the database, not in a conductor's memory, so that a restart, another
conductor or a Placement outage loses nothing: a node stays ``pending`` until a
report of its current tree has gone through whole. A node is reported by one
conductor at a time: the conductor claims its row with one conditional UPDATE (free,
or its lease expired: its holder died), the same way sync leases are taken
(``accel.conductor.leases``), and gives it back with the outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.alarms import clear_alarm, clear_alarms, raise_alarm, raise_alarms
from accel.conductor.placement.reconcile import Left, Outcome
from accel.db.models import Alarm, PlacementNode
from accel.states import AlarmKind, AlarmState


@dataclass(frozen=True)
class Claimed:
    node: str
    providers: dict[str, Left]
    reported_digest: str | None
    # The root found by the last report: its tree is read in one call.
    root_uuid: str | None = None
    # ``time.monotonic()`` after which the claimer's report makes no more calls: its
    # lease's end, less a margin (``PlacementLoop``); then another may hold the node.
    until: float = math.inf


def note_trees(sessions: sessionmaker[Session], digests: Mapping[str, str]) -> int:
    """Marks pending every node whose tree is not the one last reported (new nodes
    too); the number of nodes newly pending."""
    with sessions.begin() as session:
        stored = dict(
            session.execute(select(PlacementNode.node, PlacementNode.reported_digest)).all()
        )
        new = [node for node in digests if node not in stored]
        if new:
            # Another conductor may note the same new node at the same time: its row stands.
            session.execute(
                _insert(session).on_conflict_do_nothing(index_elements=[PlacementNode.node]),
                [
                    {"node": node, "providers_json": "{}", "pending": True, "failures": 0}
                    for node in new
                ],
            )
        changed = [
            node for node, digest in digests.items() if node in stored and stored[node] != digest
        ]
        for chunk in _chunks(changed):
            session.execute(
                update(PlacementNode)
                .where(PlacementNode.node.in_(chunk), PlacementNode.pending.is_(False))
                .values(pending=True, next_try_at=None)
                .execution_options(synchronize_session=False)
            )
    return len(new) + len(changed)


def _insert(session: Session) -> Any:
    """An INSERT of the dialect in use, which knows ON CONFLICT."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(PlacementNode)
    return sqlite.insert(PlacementNode)


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def claim_nodes(
    sessions: sessionmaker[Session],
    owner: str,
    now: dt.datetime,
    lease_seconds: float,
    checked_before: dt.datetime,
    limit: int,
    running: Collection[str] = (),
) -> list[Claimed]:
    """Takes up to ``limit`` nodes that are due (pending and not backing off, or not
    checked since ``checked_before``) and that no live conductor holds; ``running``:
    this conductor's reports in flight, never claimed twice."""
    row = PlacementNode
    free = or_(row.owner.is_(None), row.lease_until < now, row.owner == owner)
    if running:
        free = and_(free, row.node.not_in(list(running)))
    due = or_(
        and_(row.pending.is_(True), or_(row.next_try_at.is_(None), row.next_try_at <= now)),
        row.checked_at.is_(None),
        row.checked_at < checked_before,
    )
    claimable = and_(free, due)
    with sessions.begin() as session:
        ids = session.scalars(
            select(row.id)
            .where(claimable)
            .order_by(row.pending.desc(), row.checked_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not ids:
            return []
        # The WHERE repeats the test: on SQLite nothing was locked, and this UPDATE is
        # what makes the claim atomic.
        rows = session.execute(
            update(row)
            .where(row.id.in_(ids), claimable)
            .values(owner=owner, lease_until=now + dt.timedelta(seconds=lease_seconds))
            .returning(row.node, row.providers_json, row.reported_digest, row.root_uuid)
            .execution_options(synchronize_session=False)
        ).all()
    return [
        Claimed(node, _providers(providers_json), digest, root)
        for node, providers_json, digest, root in rows
    ]


def _providers(text: str) -> dict[str, Left]:
    data: dict[str, Any] = json.loads(text or "{}")
    return {uuid: Left.from_json(value) for uuid, value in data.items()}


def record_outcome(
    sessions: sessionmaker[Session],
    owner: str,
    node: str,
    digest: str,
    outcome: Outcome | None,
    error: str | None,
    now: dt.datetime,
    retry_after: float,
    outdated: bool = False,
) -> bool:
    """Stores a report's outcome (``None``: Placement did not answer, ``error`` says
    how) and gives the node back; False if another conductor holds it now.
    ``outdated``: the node's tree changed while it was being reported. ``note_trees``
    saw the node pending then and left it so; it stays pending, due at once, or the
    change would wait for the next drift check."""
    with sessions.begin() as session:
        row = session.scalar(
            select(PlacementNode).where(PlacementNode.node == node).with_for_update()
        )
        if row is None or row.owner != owner:
            return False
        row.owner = None
        row.lease_until = None
        row.checked_at = now
        if outcome is not None:
            row.providers_json = json.dumps(
                {uuid: left.as_json() for uuid, left in sorted(outcome.providers.items())}
            )
            row.root_uuid = outcome.root_uuid or row.root_uuid
            error = outcome.error
            _alarms(session, node, outcome, now)
        done = outcome is not None and outcome.done
        if done:
            row.pending = outdated
            row.reported_digest = digest
            row.reported_at = now
            row.failures = 0
            row.next_try_at = None
            row.last_error = None
        else:
            row.pending = True
            row.failures += 1
            backoff = min(retry_after * 2 ** min(row.failures - 1, 10), 600.0)
            row.next_try_at = now + dt.timedelta(seconds=backoff)
            row.last_error = error
    return True


def _alarms(session: Session, node: str, outcome: Outcome, now: dt.datetime) -> None:
    if outcome.root_missing:
        raise_alarm(
            session,
            AlarmKind.PLACEMENT_ROOT_MISSING,
            node,
            f"Placement has no compute-node provider for node {node}: its accelerators "
            "are not reported until nova-compute registers it",
            now,
        )
        return
    clear_alarm(session, AlarmKind.PLACEMENT_ROOT_MISSING, node, now)
    raise_alarms(
        session,
        AlarmKind.PLACEMENT_PROVIDER_IN_USE,
        {
            uuid: f"the hardware behind provider {uuid} of node {node} vanished, but "
            "allocations still hold it: kept in Placement, fully reserved"
            for uuid in outcome.in_use
        },
        now,
    )
    held = set(outcome.in_use)
    stale = session.scalars(
        select(Alarm.subject).where(
            Alarm.kind == AlarmKind.PLACEMENT_PROVIDER_IN_USE,
            Alarm.state == AlarmState.ACTIVE,
            Alarm.message.contains(f" of node {node} "),
        )
    ).all()
    clear_alarms(
        session, AlarmKind.PLACEMENT_PROVIDER_IN_USE, [s for s in stale if s not in held], now
    )


def release_nodes(sessions: sessionmaker[Session], owner: str) -> None:
    with sessions.begin() as session:
        session.execute(
            update(PlacementNode)
            .where(PlacementNode.owner == owner)
            .values(owner=None, lease_until=None)
            .execution_options(synchronize_session=False)
        )


def pending_count(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count()).select_from(PlacementNode).where(PlacementNode.pending.is_(True))
        )
        or 0
    )
