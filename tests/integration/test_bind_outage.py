"""PostgreSQL stopped under binds that sit in their commit, and started again.

The binds are held in their COMMIT by the stalling trigger of test_bind_faults.py;
once one waits there the server is stopped (fast: every backend ends). Every bind
is answered 503 with a JSON body, none is left half-done or holding an accelerator,
and each binds once the database is back (docs/operations.md, "Binds").
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from accel.db.engine import make_engine
from accel.driver.fake_sysfs import FakeSysfs
from accel.states import ArqState
from tests.integration.fleet import bind_ops
from tests.integration.test_allocation import (
    arq,
    create_arqs,
    create_profile,
    qat_node,
    qat_vf_deployables,
)
from tests.integration.test_bind_faults import STALLED_COMMIT, patch, stored
from tests.postgres import ThrowawayPostgres
from tests.processes import Cluster, wait_until


def in_commit(database: str) -> int:
    """How many of the database's sessions wait in a stalled commit's pg_sleep."""
    engine = make_engine(database)
    try:
        with engine.connect() as connection:
            count = connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event = 'PgSleep'"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    return int(count)


@pytest.mark.postgres
def test_postgresql_stopped_under_binds_in_their_commit_strands_none(
    cluster: Cluster, postgres: ThrowawayPostgres, gpu_server: FakeSysfs
) -> None:
    """PostgreSQL stopped while binds sit in their commit (held there by the stalling
    trigger), and started again: each is answered 503 with a JSON body (never a
    500), none is left BindStarted or holding an accelerator, and each binds once the
    database is back."""
    database = postgres.new_database()
    api = qat_node(cluster, database, gpu_server)
    create_profile(api, "qat-two", {"resources:CUSTOM_QAT": "2"})
    requests = [r["uuid"] for r in create_arqs(api, "qat-two")]
    vfs = [vf["rp_uuid"] for vf in qat_vf_deployables(api).values()]
    ops = {r: bind_ops(vf, str(uuid.uuid4())) for r, vf in zip(requests, vfs, strict=False)}
    engine = make_engine(database)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(STALLED_COMMIT.format(seconds=60))
    finally:
        engine.dispose()

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        sent = [pool.submit(patch, api, r, ops[r]) for r in requests]
        wait_until(lambda: in_commit(database) > 0 or None, "a bind in its commit")
        postgres.stop()  # fast: every backend ends, the stalled commits with them
        try:
            answers = [future.result() for future in sent]
        finally:
            postgres.start()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["content-type"] == "application/json", answer.text
    after = stored(database)
    assert {after.arqs[r][0] for r in requests} == {ArqState.INITIAL}, after
    assert after.handles_in_use == set()

    engine = make_engine(database)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("DROP TRIGGER stall_bound ON extended_accelerator_requests")
    finally:
        engine.dispose()
    for request in requests:
        assert patch(api, request, ops[request]).status_code == 202
        assert arq(api, request)["state"] == ArqState.BOUND
