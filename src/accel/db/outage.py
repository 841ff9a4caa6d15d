"""What "the database is away" looks like from inside a process, on both backends.

One condition whatever its cause: a PostgreSQL server stopped, restarting or out of
reach; an SQLite file that cannot be opened, is read-only or sits on a full disk;
a lock held past the busy timeout; a pool with no connection free in time. Every
one of these passes (the database comes back, the disk is freed), so callers answer
"unavailable, try again" rather than treat it as a bug.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy import exc as sa_exc

DATABASE_AWAY: tuple[type[Exception], ...] = (
    # SQLAlchemy's wrappers of the drivers' errors: connection refused or lost,
    # "unable to open database file", "attempt to write a readonly database",
    # "database or disk is full", "database is locked", PostgreSQL's disk full.
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    # No pooled connection came free within the pool's timeout.
    sa_exc.TimeoutError,
    # The same conditions met on a bare sqlite3 connection (the api's generation watch).
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
)
