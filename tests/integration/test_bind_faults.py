"""Binds through faults: conductors killed mid-bind, answers lost, rows left half-bound.

Whatever fails, every accelerator request ends in a final state, a client is never
told a bind failed while an accelerator is allocated to it, and no attach handle is
in use without a Bound request holding it.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from accel.db.engine import make_engine
from accel.db.models import AcceleratorRequest, AttachHandle
from accel.driver.fake_sysfs import FakeSysfs
from accel.states import ArqState, OperationState
from tests.integration.fleet import (
    FAST_AGENT,
    FAST_CONDUCTOR,
    FAST_DRIVER,
    bind_ops,
    wait_for_devices,
)
from tests.integration.test_allocation import (
    arq,
    call,
    create_arqs,
    create_profile,
    qat_node,
    qat_vf_deployables,
)
from tests.integration.test_database_outage import disk_full
from tests.integration.test_setup import IDLE_QAT, finished, qat_hardware, setup
from tests.lossy_proxy import AnswerLosingProxy
from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, Service, wait_until

FINAL = (ArqState.BOUND, ArqState.BIND_FAILED, ArqState.INITIAL, ArqState.UNBOUND)
UNBIND = [
    {"op": "remove", "path": "/hostname"},
    {"op": "remove", "path": "/device_rp_uuid"},
    {"op": "remove", "path": "/instance_uuid"},
]
BINDS = 20


@dataclass(frozen=True)
class Stored:
    """What the database holds: each request's state, handle and instance; handles in use."""

    arqs: dict[str, tuple[str, int | None, str | None]]
    handles_in_use: set[int]


def stored(database: str) -> Stored:
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(
                    AcceleratorRequest.uuid,
                    AcceleratorRequest.state,
                    AcceleratorRequest.attach_handle_id,
                    AcceleratorRequest.instance_uuid,
                )
            ).all()
            in_use = set(
                connection.scalars(select(AttachHandle.id).where(AttachHandle.in_use.is_(True)))
            )
    finally:
        engine.dispose()
    return Stored({row[0]: (row[1], row[2], row[3]) for row in rows}, in_use)


@pytest.fixture
def proxy() -> Iterator[AnswerLosingProxy]:
    relay = AnswerLosingProxy()
    yield relay
    relay.close()


def patch(api: Service, arq_uuid: str, ops: list[dict[str, str]]) -> httpx.Response:
    return call(api, "PATCH", "/v2/accelerator_requests", {arq_uuid: ops})


def binds_through_a_kill(
    cluster: Cluster,
    api: Service,
    database: str,
    victim: Service,
    restart: bool,
    retry_via: Service | None = None,
    fault: Callable[[Service], AbstractContextManager[None]] | None = None,
) -> None:
    """About twenty binds in flight, ``victim`` killed (-9) among them; then the checks.

    With ``fault``, ``victim`` is not killed but suffers the fault until every bind
    has its answer.

    With ``retry_via``, a bind whose answer never came is sent again there, as a
    client retries on another api: it must answer what became of the first try.
    """
    create_profile(api, "qat-many", {"resources:CUSTOM_QAT": str(BINDS)})
    requests = [r["uuid"] for r in create_arqs(api, "qat-many")]
    vfs = list(qat_vf_deployables(api).values())  # four VFs, one accelerator each
    instances = {r: str(uuid.uuid4()) for r in requests}
    ops = {
        r: bind_ops(vfs[index % len(vfs)]["rp_uuid"], instances[r])
        for index, r in enumerate(requests)
    }
    answers: dict[str, int] = {}

    def bind(index: int) -> None:
        request = requests[index]
        try:
            answers[request] = patch(api, request, ops[request]).status_code
        except httpx.HTTPError:
            answers[request] = 0  # no answer at all

    def some_bind_landed() -> bool:
        return bool(answers) or any(
            s != ArqState.INITIAL for s, _, _ in stored(database).arqs.values()
        )

    with ThreadPoolExecutor(max_workers=BINDS) as pool:
        done = [pool.submit(bind, index) for index in range(BINDS)]
        wait_until(some_bind_landed, "a first bind", on_timeout=cluster.logs)
        if fault is not None:  # not a kill: the fault lasts until every bind answered
            with fault(victim):
                for future in done:
                    future.result()
        else:
            victim.kill()
            if restart:
                cluster.restart(victim)  # the same name, on the same address
            else:
                cluster.discard(victim)
        for future in done:
            future.result()
    if retry_via is not None:
        unanswered = [r for r in requests if answers[r] == 0]
        for request in unanswered:
            answers[request] = patch(retry_via, request, ops[request]).status_code
        assert all(answers[r] == 202 for r in unanswered), answers

    def all_final() -> Stored | None:
        found = stored(database)
        return found if all(s in FINAL for s, _, _ in found.arqs.values()) else None

    final = wait_until(all_final, "every request in a final state", on_timeout=cluster.logs)
    print(
        "answers",
        Counter(answers.values()),
        "states",
        Counter(s for s, _, _ in final.arqs.values()),
    )
    for request in requests:
        state, _, instance = final.arqs[request]
        if answers[request] == 202:
            assert state in (ArqState.BOUND, ArqState.BIND_FAILED), (request, state)
            assert instance == instances[request]
        else:  # told it failed: it holds nothing
            assert state != ArqState.BOUND, (request, answers[request], state)
    holders = [h for s, h, _ in final.arqs.values() if s == ArqState.BOUND]
    assert None not in holders and len(set(holders)) == len(holders)
    assert final.handles_in_use == set(holders)

    # Every request that is not Bound can be bound again, once an accelerator is free.
    survivor = retry_via or api
    loose = next(r for r in requests if final.arqs[r][0] != ArqState.BOUND)
    assert patch(survivor, loose, UNBIND).status_code == 202
    bound = [r for r in requests if final.arqs[r][0] == ArqState.BOUND]
    if bound:
        assert patch(survivor, bound[0], UNBIND).status_code == 202
    freed = {vf["rp_uuid"] for vf in vfs} - {arq(survivor, r)["device_rp_uuid"] for r in bound[1:]}
    again = patch(survivor, loose, bind_ops(sorted(freed)[0], str(uuid.uuid4())))
    assert again.status_code == 202, again.text
    assert arq(survivor, loose)["state"] == ArqState.BOUND


def test_a_conductor_killed_among_binds_on_sqlite_loses_none(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = qat_node(cluster, sqlite_url, gpu_server)
    [conductor] = [s for s in cluster.services if s.name == "conductor"]
    binds_through_a_kill(cluster, api, sqlite_url, conductor, restart=True)


def qat_node_of_two_conductors(
    cluster: Cluster, database: str, tree: FakeSysfs
) -> tuple[Service, Service]:
    """A QAT node heard by two conductors on one database: its api, and the first."""
    pair = [cluster.conductor(database, **FAST_CONDUCTOR) for _ in range(2)]
    api = cluster.api(database)
    agent = cluster.agent([c.url for c in pair], "node1", **FAST_AGENT)
    cluster.driver("QAT", agent, tree.root, **FAST_DRIVER)
    wait_for_devices(api, 2, cluster.logs)
    return api, pair[0]


@pytest.mark.postgres
def test_one_of_two_conductors_killed_among_binds_on_postgresql_loses_none(
    cluster: Cluster, postgres: ThrowawayPostgres, gpu_server: FakeSysfs
) -> None:
    database = postgres.new_database()
    api, first = qat_node_of_two_conductors(cluster, database, gpu_server)
    binds_through_a_kill(cluster, api, database, first, restart=False)


def test_an_api_killed_among_binds_leaves_retries_the_truth(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    api = qat_node(cluster, sqlite_url, gpu_server)
    replica = cluster.api(sqlite_url)
    binds_through_a_kill(cluster, api, sqlite_url, api, restart=False, retry_via=replica)


def test_a_request_left_bind_started_is_failed_by_a_live_conductor(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """As an older conductor killed between its two transactions left it."""
    api = qat_node(cluster, sqlite_url, gpu_server)
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    [request] = create_arqs(api, "qat-one")
    vf = qat_vf_deployables(api)["node1_0000:6b:00.1"]
    instance = str(uuid.uuid4())
    engine = make_engine(sqlite_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(AcceleratorRequest)
                .where(AcceleratorRequest.uuid == request["uuid"])
                .values(
                    state=ArqState.BIND_STARTED,
                    hostname="node1",
                    device_rp_uuid=vf["rp_uuid"],
                    instance_uuid=instance,
                    updated_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                )
            )
    finally:
        engine.dispose()

    def resolved() -> list[dict[str, str]] | None:
        answer = call(
            api, "GET", "/v2/accelerator_requests", instance=instance, bind_state="resolved"
        )
        return answer.json()["arqs"] if answer.status_code == 200 else None

    [failed] = wait_until(resolved, "Nova's poll to see the request resolved")
    assert failed["state"] == ArqState.BIND_FAILED
    assert "stopped" in failed["bind_failure_reason"]
    assert stored(sqlite_url).handles_in_use == set()
    assert patch(api, request["uuid"], UNBIND).status_code == 202
    assert patch(api, request["uuid"], bind_ops(vf["rp_uuid"], instance)).status_code == 202
    assert arq(api, request["uuid"])["state"] == ArqState.BOUND


def test_a_change_whose_answer_was_lost_answers_what_was_done(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, proxy: AnswerLosingProxy
) -> None:
    """The conductor commits, then its answer is lost: the api and a retry learn the truth."""
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR, advertise=proxy.endpoint)
    proxy.target = conductor.endpoint
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 2, cluster.logs)
    create_profile(api, "qat-two", {"resources:CUSTOM_QAT": "2"})
    first, second = (r["uuid"] for r in create_arqs(api, "qat-two"))
    vf = qat_vf_deployables(api)["node1_0000:6b:00.2"]
    instance = str(uuid.uuid4())
    bind = bind_ops(vf["rp_uuid"], instance)

    answer = patch(api, first, bind)
    assert proxy.lost == 1
    assert answer.status_code == 202, answer.text
    assert arq(api, first)["state"] == ArqState.BOUND

    proxy.losing = False  # the client's own retry reaches the conductor, which agrees
    again = patch(api, first, bind)
    assert again.status_code == 202, again.text
    assert arq(api, first)["state"] == ArqState.BOUND

    proxy.losing = True
    assert patch(api, first, UNBIND).status_code == 202
    assert proxy.lost == 2
    assert arq(api, first)["state"] == ArqState.UNBOUND
    assert stored(sqlite_url).handles_in_use == set()

    proxy.losing = False
    assert patch(api, second, bind_ops(vf["rp_uuid"], str(uuid.uuid4()))).status_code == 202
    proxy.losing = True
    deleted = call(api, "DELETE", "/v2/accelerator_requests", arqs=second)
    assert deleted.status_code == 204, deleted.text
    assert proxy.lost == 3
    assert call(api, "GET", f"/v2/accelerator_requests/{second}").status_code == 404
    assert stored(sqlite_url).handles_in_use == set()


def test_a_bind_the_api_gave_up_on_never_commits_later(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """A conductor frozen with the request in its socket wakes after the api answered."""
    api = qat_node(cluster, sqlite_url, gpu_server)
    [conductor] = [s for s in cluster.services if s.name == "conductor"]
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    [request] = create_arqs(api, "qat-one")
    vf = qat_vf_deployables(api)["node1_0000:6b:00.1"]
    conductor.pause()
    try:
        answer = patch(api, request["uuid"], bind_ops(vf["rp_uuid"], str(uuid.uuid4())))
    finally:
        conductor.resume()
    assert answer.status_code == 503, answer.text
    wait_until(
        lambda: "deadline passed" in conductor.log(),
        "the woken conductor to refuse the bind",
        on_timeout=cluster.logs,
    )
    assert arq(api, request["uuid"])["state"] == ArqState.INITIAL
    assert stored(sqlite_url).handles_in_use == set()


def test_a_setup_request_whose_answer_was_lost_answers_its_operation(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs, proxy: AnswerLosingProxy
) -> None:
    """The sibling of a lost bind: the conductor stored the operation, its answer was lost."""
    conductor = cluster.conductor(sqlite_url, **FAST_CONDUCTOR, advertise=proxy.endpoint)
    proxy.target = conductor.endpoint
    api = cluster.api(sqlite_url)
    agent = cluster.agent([conductor.url], "node1", **FAST_AGENT)
    cluster.driver("QAT", agent, gpu_server.root, **FAST_DRIVER)
    wait_for_devices(api, 2, cluster.logs)
    device = qat_hardware(api, IDLE_QAT)["uuid"]

    answer = setup(api, device, {"action": "enable_vfs", "num_vfs": 2})
    assert proxy.lost == 1
    assert answer.status_code == 202, answer.text
    operation = answer.json()["operation"]
    assert finished(api, operation["uuid"])["state"] == OperationState.DONE
    assert (gpu_server.device_dir(IDLE_QAT) / "sriov_numvfs").read_text().strip() == "2"


def undo_one(
    api: Service, requests: list[str], answers: dict[str, tuple[str, int]], index: int
) -> None:
    """Unbinds (odd ``index``) or deletes (even) one request, noting its answer."""
    request = requests[index]
    what = "unbind" if index % 2 else "delete"
    try:
        if what == "unbind":
            status = patch(api, request, UNBIND).status_code
        else:
            status = call(api, "DELETE", "/v2/accelerator_requests", arqs=request).status_code
    except httpx.HTTPError:
        status = 0
    answers[request] = (what, status)


def any_not_bound(database: str, requests: list[str]) -> bool:
    now = stored(database).arqs
    return any(now.get(r, ("gone",))[0] != ArqState.BOUND for r in requests)


def test_a_conductor_killed_among_unbinds_and_deletes_frees_exactly_what_it_said(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """Every VF bound, then unbinds and bulk deletes in flight as the conductor dies:
    one answered success is undone and its VF free; one answered failure still holds
    it; no VF stays in use without a Bound request, whatever the kill hit."""
    api = qat_node(cluster, sqlite_url, gpu_server)
    [conductor] = [s for s in cluster.services if s.name == "conductor"]
    vfs = [vf["rp_uuid"] for vf in qat_vf_deployables(api).values()]
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    for round_ in range(3):
        requests = [create_arqs(api, "qat-one")[0]["uuid"] for _ in vfs]
        for request, vf in zip(requests, vfs, strict=True):
            bound = patch(api, request, bind_ops(vf, str(uuid.uuid4())))
            assert bound.status_code == 202, (round_, bound.text)
        answers: dict[str, tuple[str, int]] = {}
        undo = functools.partial(undo_one, api, requests, answers)
        some_undo_landed = functools.partial(any_not_bound, sqlite_url, requests)
        with ThreadPoolExecutor(max_workers=len(requests)) as pool:
            done = [pool.submit(undo, index) for index in range(len(requests))]
            # The kill lands at a different point each round: as they are sent, after
            # the first is stored, after the first is answered.
            if round_ == 1:
                wait_until(some_undo_landed, "a first unbind or delete", on_timeout=cluster.logs)
            elif round_ == 2:
                wait_until(answers.__len__, "a first answer", on_timeout=cluster.logs)
            conductor.kill()
            conductor = cluster.restart(conductor)
            for future in done:
                future.result()
        final = stored(sqlite_url)
        print("round", round_, "answers", answers)
        for request, (what, status) in answers.items():
            state = final.arqs.get(request, ("gone", None, None))[0]
            if status in (202, 204):
                assert state == (ArqState.UNBOUND if what == "unbind" else "gone"), (
                    request,
                    what,
                    state,
                )
            elif status != 0:  # told it failed: it is as it was
                assert state == ArqState.BOUND, (request, what, status, state)
        holders = [h for s, h, _ in final.arqs.values() if s == ArqState.BOUND]
        assert None not in holders and len(set(holders)) == len(holders)
        assert final.handles_in_use == set(holders)
        # Whatever is left is undone now, so that the next round has every VF free.
        for request, (state, _, _) in final.arqs.items():
            if state == "Bound":
                assert patch(api, request, UNBIND).status_code == 202


def test_one_of_two_conductors_on_sqlite_killed_among_binds_loses_none(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """Two conductors contending for one SQLite file's write lock, one killed (-9)."""
    api, first = qat_node_of_two_conductors(cluster, sqlite_url, gpu_server)
    binds_through_a_kill(cluster, api, sqlite_url, first, restart=False)


def test_a_conductor_whose_disk_fills_among_binds_on_sqlite_loses_none(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """The database going away under a conductor mid-bind: its every write fails."""
    api = qat_node(cluster, sqlite_url, gpu_server)
    [conductor] = [s for s in cluster.services if s.name == "conductor"]
    binds_through_a_kill(cluster, api, sqlite_url, conductor, restart=False, fault=disk_full)


def test_a_conductor_killed_among_setup_requests_runs_each_answered_one_once(
    cluster: Cluster, sqlite_url: str, gpu_server: FakeSysfs
) -> None:
    """The sibling of a kill among binds, for ``POST /v2/devices/{uuid}/setup``: an
    operation answered 202 is finished by the restarted conductor, one answered
    503 was never stored, and none is left PENDING or RUNNING."""
    api = qat_node(cluster, sqlite_url, gpu_server)
    [conductor] = [s for s in cluster.services if s.name == "conductor"]
    device = qat_hardware(api, IDLE_QAT)["uuid"]
    answers: list[httpx.Response] = []

    def operations() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = call(api, "GET", "/v2/operations").json()["operations"]
        return found

    def more_stored_than(count: int) -> bool:
        return len(operations()) > count

    for round_ in range(4):
        stored_before = len(operations())
        with ThreadPoolExecutor(max_workers=1) as pool:
            sent = pool.submit(setup, api, device, {"action": "enable_vfs", "num_vfs": round_ + 1})
            # The kill lands as the request is sent, or once its operation is stored.
            if round_ % 2:
                wait_until(
                    functools.partial(more_stored_than, stored_before),
                    "the operation to be stored",
                    on_timeout=cluster.logs,
                )
            conductor.kill()
            conductor = cluster.restart(conductor)
            answer = sent.result()
        answers.append(answer)
        assert answer.status_code in (202, 503), answer.text
        if answer.status_code == 202:
            done = finished(api, answer.json()["operation"]["uuid"])
            assert done["state"] == OperationState.DONE, done
        else:
            assert len(operations()) == stored_before, answer.text
    listed = operations()
    assert {o["state"] for o in listed} <= {OperationState.DONE, OperationState.FAILED}, listed
    accepted = {a.json()["operation"]["uuid"] for a in answers if a.status_code == 202}
    assert {o["uuid"] for o in listed} == accepted


# Stands in for a conductor stalled between its deadline check and its COMMIT (a
# SIGSTOP, a slow fsync, a synchronous standby that does not confirm): the commit
# of a bind runs this at COMMIT, holding the request's row, and lands late.
STALLED_COMMIT = """
CREATE FUNCTION stall_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep({seconds});
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER stall_bound AFTER UPDATE ON extended_accelerator_requests
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.state = 'Bound') EXECUTE FUNCTION stall_commit();
"""


@pytest.mark.postgres
def test_a_bind_whose_commit_stalls_past_the_apis_patience_is_not_answered_failed(
    cluster: Cluster, postgres: ThrowawayPostgres, gpu_server: FakeSysfs
) -> None:
    """The conductor checked the api's deadline in time, then its commit stalled while
    it held the request's row: the api, unable to read the row, must not tell the
    client the bind failed, since the commit still lands."""
    database = postgres.new_database()
    api = qat_node(cluster, database, gpu_server)
    create_profile(api, "qat-one", {"resources:CUSTOM_QAT": "1"})
    [request] = [r["uuid"] for r in create_arqs(api, "qat-one")]
    vf = next(iter(qat_vf_deployables(api).values()))["rp_uuid"]
    engine = make_engine(database)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(STALLED_COMMIT.format(seconds=45))
    finally:
        engine.dispose()

    answer = httpx.patch(
        f"{api.url}/v2/accelerator_requests",
        json={request: bind_ops(vf, str(uuid.uuid4()))},
        timeout=120.0,
    )

    # Whatever still holds the request's row finishes before this lock is granted.
    engine = make_engine(database)
    try:
        with engine.begin() as connection:
            connection.execute(
                select(AcceleratorRequest.id)
                .where(AcceleratorRequest.uuid == request)
                .with_for_update()
            )
    finally:
        engine.dispose()
    final = stored(database).arqs[request]
    print("answer", answer.status_code, answer.text, "state", final)
    if answer.status_code != 202:  # told it failed: it holds nothing
        assert final[0] != ArqState.BOUND, (answer.status_code, answer.text, final)
