"""``GET /healthz``: whether this api can reach its database, for load balancers.

``GET /`` is Cyborg's version document and answers 200 as long as the process
runs; a load balancer that watched it would keep sending traffic to an api whose
every answer is 503. This one answers 200 ``{"database": "ok"}`` when the api can
read its database now, and 503 ``{"database": "unavailable"}`` when it cannot or
the check takes longer than ``HEALTH_TIMEOUT_S``. It needs no token (a load
balancer has none) and says nothing more.

It reads, it does not write: a database that can be read but not written (a full
disk, a read-only file) shows "ok" here while writes answer 503. Probing writes
would take SQLite's write lock on every check, and a long transaction of a
conductor would then take every api out of rotation at once.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Literal

import anyio
import anyio.to_thread
from sqlalchemy import Engine, text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from accel.api.queries import reader
from accel.db.generation import GENERATION_SQL
from accel.db.outage import DATABASE_AWAY

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_S = 5.0
# What ``{"database": ...}`` says (the OpenAPI document lists the same).
DatabaseState = Literal["ok", "unavailable"]
UNHEALTHY: tuple[type[Exception], ...] = (TimeoutError, *DATABASE_AWAY)


def probe(engine: Engine) -> None:
    """Reads the inventory generation on a connection that proves the database is
    there now; raises one of DATABASE_AWAY if it is not."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        # A fresh connection: pooled ones keep a file open after it was moved or
        # made unreadable. Read-only, so a missing file is not created empty.
        uri = Path(database).absolute().as_uri() + "?mode=ro"
        bare = sqlite3.connect(uri, uri=True, timeout=HEALTH_TIMEOUT_S)
        try:
            bare.execute(GENERATION_SQL).fetchone()
        finally:
            bare.close()
        return
    # PostgreSQL: the pool pings a connection before lending it.
    with engine.connect() as connection:
        connection.execute(text(GENERATION_SQL))


async def healthz(request: Request) -> Response:
    engine = reader(request).engine
    try:
        with anyio.fail_after(HEALTH_TIMEOUT_S):
            await anyio.to_thread.run_sync(probe, engine, abandon_on_cancel=True)
    except UNHEALTHY as exc:
        log.info("health check: the database is unavailable: %s", str(exc).splitlines()[0])
        return _answer("unavailable", 503)
    return _answer("ok", 200)


def _answer(state: DatabaseState, status: int) -> Response:
    return JSONResponse({"database": state}, status_code=status)
