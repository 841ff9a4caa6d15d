"""When a view of the fleet page is unchanged: its ETag, known before anything is rendered.

An open tab asks for its view's content every few seconds. Rendering it means the
queries of a whole fleet and a template of a thousand rows, so a refresh is judged
first on what the view is made of, and an unchanged one is answered 304 without any
of it. The ETag is a hash (``etag_of``, the api's one) of:

- the inventory generation, read by the api's one ``GenerationWatch`` (the devices,
  their deployables and attributes: everything a cached API read shows);
- the side stamp: one row of counts and maxima over what the page shows besides the
  inventory and the generation does not watch (alarms, agents, accelerator
  requests, setup operations), read by one statement of index look-ups and small
  scans; a raise, a clear, an agent's coming or going, a bind, an unbind, a setup
  step each move one of its numbers;
- who asks (user, project, roles) and the policy's rules (a ``--policy-file``
  changes what a role is shown), and the request (view, path, query, whether the
  content alone, the prefix);
- the build: the page's templates and accel's version.

An agent's heartbeat moves none of these: the page shows when an agent was last seen
only once it is DOWN (when that time stops moving; its going DOWN raises an alarm).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session
from starlette.requests import Request

import accel
from accel.api.auth import RequestContext
from accel.api.cache import cache, etag_of
from accel.api.queries import reader
from accel.db.models import AcceleratorRequest, Agent, Alarm, Operation
from accel.states import AgentState, AlarmState, ArqState, OperationState

TEMPLATES = Path(__file__).parent / "templates"


def _build() -> str:
    """The page's markup and code as deployed: a new one never answers an old ETag."""
    digest = hashlib.blake2b(accel.__version__.encode(), digest_size=12)
    for template in sorted(TEMPLATES.glob("*.html")):
        digest.update(template.name.encode() + b"\0" + template.read_bytes())
    return digest.hexdigest()


BUILD = _build()


def _scalar(statement: Select[Any]) -> Any:
    return statement.scalar_subquery()


def _side_stamp() -> Select[Any]:
    arq = AcceleratorRequest
    return select(
        # Alarms only ever gain rows (a new id) or are cleared (leave the active ones).
        _scalar(select(func.max(Alarm.id))),
        _scalar(select(func.count()).where(Alarm.state == AlarmState.ACTIVE)),
        # An agent comes (a new id) or is removed (one fewer); it goes DOWN or UP.
        _scalar(select(func.max(Agent.id))),
        *(_scalar(select(func.count()).where(Agent.state == state)) for state in AgentState),
        # A bind or an unbind sets or clears the handle and stamps updated_at; the
        # sums tell a bind from an unbind of another request in the same moment.
        _scalar(select(func.count()).select_from(arq)),
        _scalar(select(func.max(arq.id))),
        _scalar(select(func.max(arq.updated_at))),
        _scalar(select(func.count(arq.attach_handle_id))),
        _scalar(select(func.sum(arq.attach_handle_id))),
        _scalar(select(func.sum(arq.id)).where(arq.attach_handle_id.is_not(None))),
        *(_scalar(select(func.count()).where(arq.state == state)) for state in ArqState),
        # An operation is asked for (a new id) and moves through its states.
        _scalar(select(func.max(Operation.id))),
        *(
            _scalar(select(func.count()).where(Operation.state == state))
            for state in OperationState
        ),
    )


SIDE_STAMP = _side_stamp()


def policy_digest(request: Request) -> str:
    """The api's policy rules, digested once per app (they are read at start)."""
    state = request.app.state
    digest: str | None = getattr(state, "ui_policy_digest", None)
    if digest is None:
        rules = sorted((rule, sorted(checks)) for rule, checks in state.policy.items())
        digest = state.ui_policy_digest = etag_of(repr(rules).encode())
    return digest


def side_stamp(session: Session) -> tuple[Any, ...]:
    row = session.connection().execute(SIDE_STAMP).one()
    return tuple(row)


async def view_etag(request: Request, view: str, caller: RequestContext, partial: bool) -> str:
    """The ETag of ``view`` as ``caller`` would be shown it now."""
    watch = cache(request).watch
    assert watch is not None, "the cache is watched while the app serves"
    generation = await watch.current()
    stamp = await reader(request).run(side_stamp)
    identity = caller.identity
    key = (
        BUILD,
        view,
        request.scope.get("root_path", ""),
        request.scope["path"],
        request.scope["query_string"],
        partial,
        generation,
        stamp,
        identity.user_id,
        identity.project_id,
        tuple(identity.roles),
        tuple(caller.service_roles),
        policy_digest(request),
    )
    return etag_of(repr(key).encode())
