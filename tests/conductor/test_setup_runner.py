"""The conductor's setup loop: it sends each accepted operation to its node's agent,
follows it to a final state written in the database, and fails it, saying why, when
the node refuses it or stays unreachable past its grace.

The runner runs here, in the test's process, on a real SQLite database; the node is
a real agent and QAT driver, as processes on loopback, over the example GPU server's
fake sysfs tree.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from accel.conductor import operations
from accel.conductor.presence import record_conductor
from accel.conductor.setup_runner import SetupRunner, SetupSettings
from accel.db.columns import utcnow
from accel.db.engine import make_engine, session_factory
from accel.db.models import Agent, Device, Operation
from accel.driver.fake_sysfs import FakeSysfs
from accel.internal.client import InternalClient
from accel.internal.setup_schemas import OperationRequest
from accel.internal.versions import VersionRange
from tests.api.test_api import fill
from tests.integration.fleet import FAST_AGENT, FAST_DRIVER
from tests.processes import DEADLINE_SECONDS, TOKEN, Cluster, bound_socket

IDLE_QAT = "0000:70:00.0"  # a QAT PF with 16 possible VFs and none enabled
CONDUCTOR = "conductor-a"


@pytest.fixture
def sessions(sqlite_url: str, gpu_server: FakeSysfs) -> Iterator[sessionmaker[Session]]:
    fill(sqlite_url, gpu_server)  # node1 and its hardware, as its agent reported them
    engine = make_engine(sqlite_url)
    yield session_factory(engine)
    engine.dispose()


def node_at(sessions: sessionmaker[Session], endpoint: str) -> None:
    with sessions.begin() as session:
        session.execute(update(Agent).where(Agent.name == "node1").values(endpoint=endpoint))


def nowhere() -> str:
    """A loopback endpoint where nothing listens any more."""
    with bound_socket() as sock:
        host, port = sock.getsockname()
    return f"{host}:{port}"


def start_node(cluster: Cluster, sessions: sessionmaker[Session], tree: FakeSysfs) -> None:
    """node1's agent and QAT driver, as processes; the agent's conductor never answers."""
    conductor = f"http://{nowhere()}"
    agent = cluster.agent([conductor], "node1", **FAST_AGENT)
    cluster.driver("QAT", agent, tree.root, **FAST_DRIVER)
    node_at(sessions, agent.endpoint)


def accept(sessions: sessionmaker[Session], setup: dict[str, object]) -> str:
    with sessions() as session:
        device = session.scalar(select(Device.uuid).where(Device.pci_address == IDLE_QAT))
    asked = OperationRequest.model_validate({"device_uuid": device, "setup": setup})
    return str(operations.accept(sessions, asked, CONDUCTOR, utcnow()).uuid)


def driven(
    sessions: sessionmaker[Session], operation: str, unreachable_for: float = 300.0
) -> Operation:
    """Runs the runner until ``operation`` is final (bounded), and returns it."""

    async def run() -> Operation:
        client = InternalClient(TOKEN, VersionRange(), timeout=2.0)
        settings = SetupSettings(
            CONDUCTOR, VersionRange(), poll_interval=0.05, unreachable_for=unreachable_for
        )
        runner = SetupRunner(sessions, lambda: client, settings)
        loop = asyncio.create_task(runner.drive_forever())
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                while True:
                    with sessions() as session:
                        found = session.scalar(select(Operation).where(Operation.uuid == operation))
                    assert found is not None
                    if found.state in ("DONE", "FAILED"):
                        return found
                    await asyncio.sleep(0.05)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
            await client.aclose()

    return asyncio.run(run())


def test_an_operation_is_sent_to_its_node_and_followed_until_done(
    cluster: Cluster, sessions: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    start_node(cluster, sessions, gpu_server)
    operation = accept(sessions, {"action": "enable_vfs", "num_vfs": 2})
    done = driven(sessions, operation)
    assert (done.state, done.error, done.finished_at is not None) == ("DONE", None, True)
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "2"
    # A finished change asks for the node's resync at once.
    with sessions() as session:
        next_sync = session.scalar(select(Agent.next_sync_at).where(Agent.name == "node1"))
    assert next_sync is not None and next_sync <= utcnow()


def test_an_operation_the_node_refuses_fails_with_the_nodes_reason(
    cluster: Cluster, sessions: sessionmaker[Session], gpu_server: FakeSysfs
) -> None:
    start_node(cluster, sessions, gpu_server)
    operation = accept(sessions, {"action": "enable_vfs", "num_vfs": 2})
    # The card is pulled after the conductor took the operation: the driver, which
    # reads sysfs, is the one to know.
    gpu_server.remove(IDLE_QAT)
    failed = driven(sessions, operation)
    assert failed.state == "FAILED"
    assert failed.error == f"{IDLE_QAT} has no sriov_totalvfs: it cannot make virtual functions"


def test_a_node_unreachable_past_its_grace_fails_the_operation(
    sessions: sessionmaker[Session],
) -> None:
    node_at(sessions, nowhere())
    operation = accept(sessions, {"action": "enable_vfs", "num_vfs": 2})
    failed = driven(sessions, operation, unreachable_for=0.0)
    assert failed.state == "FAILED"
    assert failed.error is not None and failed.error.startswith("the node did not answer for 0s")


def test_unfinished_operations_of_a_silent_conductor_are_taken_over(
    sessions: sessionmaker[Session],
) -> None:
    node_at(sessions, nowhere())
    operation = accept(sessions, {"action": "enable_vfs", "num_vfs": 2})
    gone = "conductor-gone"
    record_conductor(sessions, gone, nowhere(), utcnow() - dt.timedelta(hours=1))
    with sessions.begin() as session:
        session.execute(update(Operation).where(Operation.uuid == operation).values(conductor=gone))
    assert driven(sessions, operation, unreachable_for=0.0).state == "FAILED"
