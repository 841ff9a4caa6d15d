"""The column types and defaults every table uses: timestamps that come back in
UTC on SQLite too, and state columns that read a newer release's values as text.
"""

from __future__ import annotations

import datetime as dt
import uuid as uuid_module
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, String, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_uuid() -> str:
    return str(uuid_module.uuid4())


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that always comes back timezone-aware in UTC, on SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class StateColumn(TypeDecorator[StrEnum]):
    """A state column: stored as the member's value in a plain VARCHAR (no native
    enum, no CHECK: the schema the migrations made), read back as the member.

    A value this release does not know reads back as its text, not as an error: during
    an upgrade a newer conductor may store a state or alarm kind that an older api or
    conductor still reads, and those must go on answering (docs/operations.md). Writing
    an unknown value is refused here, before it reaches the database.
    """

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        try:
            return self.enum(value)
        except ValueError:
            return value


class Timestamps:
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, onupdate=utcnow)
