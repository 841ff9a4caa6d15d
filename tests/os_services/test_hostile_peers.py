"""Placement, Nova's events endpoint and Keystone's token endpoint played by a hostile
peer (tests/os_services/hostile_peer.py): one that accepts and never answers, sends
half a body and stops, drips a byte at a time (in its head or its body), or answers
200 with HTML, a huge body or JSON nested past what a parser reads. Each costs a
timeout or a clear error and a bounded retry; nothing is left claimed or stuck, and
the report completes once the real Placement answers."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from accel.api.keystone import KeystoneValidator
from accel.conductor.nova_events import NovaNotifier, NovaSettings, judge, keystoneauth_post
from accel.conductor.placement.client import PlacementClient, PlacementError, ReportExpired
from accel.conductor.placement.loop import PlacementLoop
from accel.db.columns import utcnow
from accel.db.models import NovaEvent
from accel.driver.fake_sysfs import FakeSysfs
from accel.errors import Unavailable
from accel.internal.schemas import Kind
from accel.openstack.bounded_http import calls_until
from accel.openstack.credentials import (
    KeystoneUser,
    OpenStackCredentials,
    make_adapter,
    make_session,
)
from accel.states import NovaEventState
from tests.os_services.hostile_peer import MODES, HostilePeer, Mode, hostile_peer
from tests.os_services.placement_rounds import (
    FAST,
    hardware,
    loop_for,
    node_row,
    run_round,
    store,
)
from tests.placement_service import ThrowawayPlacement, children, make_root

# Short, so that each slow mode costs about a second: two tries of half a second.
QUICK = dataclasses.replace(
    OpenStackCredentials(token="admin"), timeout=0.5, retries=1, retry_delay=0.01
)
# How long a call may run before the test calls it hung: a safety net, not a speed test.
HUNG_AFTER = 30.0
SLOW: tuple[Mode, ...] = ("hang", "half", "drip", "drip_head")
T = TypeVar("T")


@pytest.fixture(scope="module")
def peer() -> Iterator[HostilePeer]:
    with hostile_peer() as server:
        yield server


def bounded(call: Callable[[], T]) -> T | BaseException:
    """``call()``'s result or exception, from a thread given ``HUNG_AFTER`` seconds."""
    found: list[Any] = []

    def run() -> None:
        try:
            found.append(call())
        except BaseException as exc:
            found.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HUNG_AFTER)
    assert found, f"the call was still running after {HUNG_AFTER}s: held by the peer"
    result: T | BaseException = found[0]
    return result


def expected_error(mode: Mode) -> str:
    if mode in SLOW:
        return "timed out"
    return {"html": "not the answer", "huge": "over", "deep": "not the answer"}[mode]


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_placement_costs_a_timeout_and_leaves_a_clear_error(
    peer: HostilePeer,
    sessions: sessionmaker[Session],
    gpu_server: FakeSysfs,
    node: str,
    mode: Mode,
) -> None:
    peer.mode = mode
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    adapter = make_adapter(make_session(QUICK), QUICK, "placement", peer.url)
    loop = PlacementLoop(sessions, PlacementClient(adapter), "conductor-a", FAST)
    assert bounded(lambda: run_round(loop)) == 1
    row = node_row(sessions, node)
    assert row.pending and row.owner is None  # given back, for the next try
    assert row.last_error and expected_error(mode) in row.last_error, row.last_error


def test_the_report_completes_once_placement_answers_again(
    peer: HostilePeer,
    sessions: sessionmaker[Session],
    placement: ThrowawayPlacement,
    gpu_server: FakeSysfs,
    node: str,
) -> None:
    peer.mode = "drip"
    root = make_root(placement, node)
    store(sessions, node, hardware(gpu_server, node, (Kind.FPGA,)))
    adapter = make_adapter(make_session(QUICK), QUICK, "placement", peer.url)
    hostile = PlacementLoop(sessions, PlacementClient(adapter), "conductor-a", FAST)
    assert bounded(lambda: run_round(hostile)) == 1
    assert node_row(sessions, node).pending
    asyncio.run(asyncio.sleep(0.01))  # past the (tiny) backoff
    assert run_round(loop_for(sessions, placement)) == 1
    assert not node_row(sessions, node).pending
    assert list(children(placement, root)) == [f"{node}_0000:86:00.0"]


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_nova_is_tried_again_never_taken_for_sent(peer: HostilePeer, mode: Mode) -> None:
    peer.mode = mode
    post = keystoneauth_post(QUICK, NovaSettings(url=peer.url, timeout=0.5))
    body = {"events": [{"name": "accelerator-request-bound", "server_uuid": "i", "tag": "a"}]}
    answer = bounded(lambda: post(body))
    if isinstance(answer, BaseException):
        assert isinstance(answer, OSError), repr(answer)  # the notifier's "retry"
        return
    outcome, error = judge(*answer)
    assert outcome == "retry" and error


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_keystone_costs_a_timeout_and_a_clear_error(
    peer: HostilePeer, placement: ThrowawayPlacement, mode: Mode
) -> None:
    peer.mode = mode
    user = KeystoneUser(username="accel", password="secret", project_name="service")
    credentials = dataclasses.replace(
        OpenStackCredentials(auth_url=peer.url + "/v3", user=user),
        timeout=0.5,
        retries=0,  # the bounded retry is the Placement test's; here, the deadline
        retry_delay=0.01,
    )
    adapter = make_adapter(make_session(credentials), credentials, "placement", placement.url)
    failure = bounded(lambda: PlacementClient(adapter).find_root("anything"))
    assert isinstance(failure, PlacementError), repr(failure)


def test_a_hanging_nova_holds_its_own_threads_never_those_of_binds(
    sessions: sessionmaker[Session],
) -> None:
    """Sends run on the notifier's own threads: with more events due than anyio's
    default pool has threads, and every send held, a bind's database call still runs."""
    now = utcnow()
    with sessions.begin() as session:
        session.execute(
            insert(NovaEvent),
            [
                {
                    "instance_uuid": str(uuid.uuid4()),
                    "events_json": '[["arq", "completed"]]',
                    "state": NovaEventState.PENDING,
                    "attempts": 0,
                    "next_attempt_at": now - dt.timedelta(seconds=1),
                    "created_at": now,
                }
                for _ in range(64)
            ],
        )
    release = threading.Event()

    def held_post(body: dict[str, list[dict[str, str]]]) -> tuple[int, bytes]:
        release.wait(HUNG_AFTER)
        return 200, b""

    notifier = NovaNotifier(sessions, held_post, NovaSettings(url=None, batch=64))

    async def scenario() -> int:
        answered = 0
        async with anyio.create_task_group() as group:
            group.start_soon(notifier.send_due)
            await asyncio.sleep(0.2)  # let the sends take what threads they can
            try:
                with anyio.fail_after(HUNG_AFTER / 3):
                    answered = await anyio.to_thread.run_sync(lambda: 1)  # a bind's call
            finally:
                release.set()
        return answered

    assert asyncio.run(scenario()) == 1


@pytest.mark.parametrize("mode", MODES)
def test_a_hostile_identity_service_is_503_for_the_apis_caller(
    peer: HostilePeer, mode: Mode
) -> None:
    """``accel api --auth keystone`` validating a token against a hostile Keystone:
    the caller's request gets 503 (Unavailable), never a hang nor a huge read."""
    peer.mode = mode

    async def validate() -> object:
        validator = KeystoneValidator(peer.url, timeout=0.5)
        try:
            return await validator.identity("a-token")
        finally:
            await validator.aclose()

    failure = bounded(lambda: asyncio.run(validate()))
    assert isinstance(failure, Unavailable), repr(failure)


def test_a_report_past_its_deadline_is_cut_off_and_sends_nothing_more(peer: HostilePeer) -> None:
    """``calls_until``, as a Placement report runs under its lease: the call in flight
    at the deadline is cut off (its timeout alone would hold it a minute), and its
    retry, like any later call, is never sent."""
    peer.mode = "hang"
    patient = dataclasses.replace(QUICK, timeout=60.0, retries=2)
    client = PlacementClient(make_adapter(make_session(patient), patient, "placement", peer.url))
    asked = peer.requests

    def report() -> None:
        with calls_until(time.monotonic() + 0.5):
            client.find_root("node")

    failure = bounded(report)
    assert isinstance(failure, ReportExpired), failure
    assert peer.requests == asked + 1
    with calls_until(time.monotonic() - 1), pytest.raises(ReportExpired):
        client.tree("root")
    assert peer.requests == asked + 1
