"""When a sync's agent is next resynced: its heartbeats confirm what is stored from
internal version 1.5, so its periodic resync waits a heartbeat interval longer."""

from __future__ import annotations

import pytest

from accel.conductor.sync_schedule import hellos_carry_etags


@pytest.mark.parametrize(
    ("last_hello_version", "sends"),
    [("1.5", True), ("1.4", False), ("1.0", False), (None, False), ("not a version", False)],
)
def test_only_an_agent_whose_last_hello_spoke_1_5_sends_etags(
    last_hello_version: str | None, sends: bool
) -> None:
    assert hellos_carry_etags(last_hello_version) is sends
