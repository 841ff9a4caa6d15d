"""Hellos of one new agent name from two endpoints, in one batch of the conductor's.

Two machines cloned from one image start together: their first hellos meet in one
transaction. The name goes to the first; the second is told the name is held, as it
would be a moment later, so the conductor asks the first who it is (NameGuard).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.agents import Hello, HelloOutcome, NameHeld, record_hellos
from accel.db.models import Agent

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def hello(endpoint: str, may_move: bool = False, name: str = "node1") -> Hello:
    return Hello(name, endpoint, "1.5", T0, may_move=may_move)


def test_a_new_name_from_two_endpoints_in_one_batch_is_held_by_the_first(
    sessions: sessionmaker[Session],
) -> None:
    first, second = "127.0.0.1:6671", "127.0.0.1:6672"
    outcomes = record_hellos(sessions, [hello(first), hello(second)], live_for=30.0)
    assert isinstance(outcomes[0], HelloOutcome) and not outcomes[0].known
    held = outcomes[1]
    assert isinstance(held, NameHeld) and held.endpoint == first
    with sessions() as session:
        assert session.scalars(select(Agent.endpoint)).all() == [first]


def test_a_later_hello_of_a_new_agent_from_its_own_endpoint_is_taken(
    sessions: sessionmaker[Session],
) -> None:
    endpoint = "127.0.0.1:6671"
    outcomes = record_hellos(sessions, [hello(endpoint), hello(endpoint)], live_for=30.0)
    assert all(isinstance(outcome, HelloOutcome) for outcome in outcomes)
    # One found gone by the NameGuard may move, as it may for a stored agent.
    moved = record_hellos(
        sessions,
        [hello("127.0.0.1:7001", name="node2"), hello("127.0.0.1:7002", True, "node2")],
        live_for=30,
    )
    assert all(isinstance(outcome, HelloOutcome) for outcome in moved)
