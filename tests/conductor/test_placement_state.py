"""The Placement bookkeeping that several conductors share (conductor/placement/state.py)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from accel.conductor.placement.state import note_trees
from accel.db.engine import make_engine, migrate, session_factory
from tests.postgres import ThrowawayPostgres


@pytest.mark.postgres
def test_two_conductors_noting_one_new_node_at_once_both_succeed(
    postgres: ThrowawayPostgres,
) -> None:
    url = postgres.new_database()
    ours, theirs = make_engine(url), make_engine(url)
    try:
        migrate(ours)
        sessions = session_factory(ours)
        raced: list[bool] = []

        def the_other_conductor_first(
            connection: Any, cursor: Any, statement: str, *_: Any
        ) -> None:
            # Between our read of the known nodes and our insert, another conductor
            # notes the same node and commits.
            if statement.startswith("INSERT INTO placement_nodes") and not raced:
                raced.append(True)
                note_trees(session_factory(theirs), {"node1": "d1"})

        event.listen(ours, "before_cursor_execute", the_other_conductor_first)
        assert note_trees(sessions, {"node1": "d1"}) == 1
        assert raced
        with ours.connect() as connection:
            rows = connection.execute(text("SELECT node FROM placement_nodes")).all()
        assert [row.node for row in rows] == ["node1"]
    finally:
        ours.dispose()
        theirs.dispose()
