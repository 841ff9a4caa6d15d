"""A Placement report that outlives its conductor's lease (docs/openstack.md, "Faults").

Conductor A's report is held mid-way (the loopback proxy keeps one of its calls) past
its lease, here a few seconds; meanwhile the node's hardware changes, conductor B
takes the node over and reports the newer tree; then A's held write reaches Placement
late. A must leave B's tree as it is: no provider made again for the hardware that
went, nothing written over B's, and Placement ends as the database says. Real
Placement 16; the two conductors are Placement loops of their own, in threads.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid

from sqlalchemy.orm import Session, sessionmaker

from accel.conductor.placement.loop import placement_loop
from accel.db.columns import utcnow
from accel.driver.fake_sysfs import FakeSysfs
from tests.integration.placement_proxy import placement_proxy
from tests.integration.test_placement_faults import in_step, sessions, vanish
from tests.os_services.placement_rounds import (
    FAST,
    credentials,
    hardware,
    loop_for,
    node_row,
    run_round,
    store,
)
from tests.placement_service import ThrowawayPlacement, children, make_root
from tests.processes import wait_until

__all__ = ["sessions"]  # the fixture: a migrated SQLite database
# Long enough for A to reach the held call (its first writes: custom classes and
# traits, a provider) on a loaded machine; the test waits this long once.
LEASE = 8.0


def lease_over_or_given_back(sessions: sessionmaker[Session], node: str) -> bool:
    row = node_row(sessions, node)
    return row.owner is None or (row.lease_until is not None and row.lease_until < utcnow())


def test_a_report_held_past_its_lease_leaves_the_next_conductors_tree_alone(
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    sessions: sessionmaker[Session],
) -> None:
    node = f"lease-{uuid.uuid4().hex[:8]}"
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node))
    gone = f"{node}_0000:ca:00.0"
    with placement_proxy(placement.url) as proxy:
        # A's calls wait as long as the proxy holds them: only its lease bounds them.
        a = placement_loop(
            sessions,
            "conductor-a",
            dataclasses.replace(credentials(), timeout=60.0),
            proxy.url,
            dataclasses.replace(FAST, lease=LEASE),
        )
        # A has made the first GPU's provider; its inventory is held, then written late.
        proxy.hold(lambda method, path: method == "PUT" and path.endswith("/inventories"), True)
        reporting = threading.Thread(target=run_round, args=(a,), daemon=True)
        reporting.start()
        wait_until(proxy.held.is_set, "conductor-a inside its report")
        # The last GPU of A's tree goes (A would make its provider after the held call).
        vanish(sessions, node, gpu_server, gone)
        wait_until(
            lambda: lease_over_or_given_back(sessions, node),
            "conductor-a's lease to end",
            timeout=LEASE + 30,
        )

        b = loop_for(sessions, placement, owner="conductor-b")
        assert run_round(b) == 1
        assert in_step(placement, sessions, node, root)
        assert gone not in children(placement, root)

        passed = len(proxy.calls)
        proxy.release.set()  # A's held inventory reaches Placement now, late
        reporting.join(60)
        assert not reporting.is_alive()
        assert proxy.calls[passed:] == [], "conductor-a called Placement past its lease"
    assert gone not in children(placement, root), "made again for hardware that went"
    assert in_step(placement, sessions, node, root), children(placement, root)
    row = node_row(sessions, node)
    assert (row.owner, row.pending) == (None, False)
