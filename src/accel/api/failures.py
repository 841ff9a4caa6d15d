"""How the public API answers when something fails: Cyborg's error body,
``{"error_message": "<JSON text of faultcode/faultstring/debuginfo>"}``, which
openstacksdk and python-cyborgclient parse, given to the one mapping from an error to
a status (accel.web.errors).

The mapping is applied at two points: Starlette's exception handlers (``HANDLERS``),
for errors raised in a route, and the ``Failures`` layer around the whole app, for
errors raised before routing (cached reads, authentication).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp

from accel.db.outage import DATABASE_AWAY
from accel.errors import AccelError
from accel.web import errors


def error_body(status: int, message: str, error: AccelError | None = None) -> dict[str, Any]:
    """Cyborg's body: the message alone, whatever the error knows besides."""
    fault = {
        "faultcode": "Client" if status < 500 else "Server",
        "faultstring": message,
        "debuginfo": None,
    }
    return {"error_message": json.dumps(fault)}


CYBORG_ERRORS = errors.ErrorShape(
    error_body,
    bug_message="internal error; the api's log has the details",
    outage=DATABASE_AWAY,
)
HANDLERS = errors.exception_handlers(CYBORG_ERRORS)


class Failures(errors.Failures):
    """Answers, in Cyborg's shape, an error raised anywhere inside it."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__(app, CYBORG_ERRORS)
