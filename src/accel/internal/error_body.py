"""How the internal API writes an error: ``{"error": message}``, with the field
problems of a 400 and the version range of a 406 beside it (docs/internal-api.md).
Which status an error gets is accel.web.errors' say."""

from __future__ import annotations

from typing import Any

from accel.errors import AccelError, InvalidInput, VersionNotAcceptable
from accel.web.errors import ErrorShape


def internal_body(status: int, message: str, error: AccelError | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message}
    if isinstance(error, VersionNotAcceptable):
        body["min_version"] = error.supported.minimum
        body["max_version"] = error.supported.maximum
    elif isinstance(error, InvalidInput) and error.problems:
        body["problems"] = [{"field": p.field, "message": p.message} for p in error.problems]
    return body


INTERNAL_ERRORS = ErrorShape(internal_body, bug_message="internal error")
