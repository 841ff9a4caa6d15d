"""Reading a request's query parameters, the same strict way on every endpoint, public
or internal: a name the endpoint does not know, a name given twice, an empty value or
a NUL is a 400 naming it, never quietly ignored."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request

from accel.errors import InvalidInput
from accel.web.nul import refuse_nul


def only_params(request: Request, allowed: Iterable[str] = ()) -> dict[str, str]:
    """The query parameters, refusing any this endpoint does not know or any given twice."""
    if not request.scope.get("query_string"):
        # Most calls carry none (every heartbeat): nothing to parse.
        return {}
    allowed = set(allowed)
    given: set[str] = set()
    for key, value in request.query_params.multi_items():
        refuse_nul(value, f"query parameter {key}")
        if key in given:
            # Which one wins would be the framework's choice, not the caller's.
            raise InvalidInput(
                f"query parameter {key} is given more than once; "
                "give it once (lists are comma-separated)"
            )
        given.add(key)
    unknown = sorted(given - allowed)
    if unknown and not allowed:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; this takes no query parameters"
        )
    if unknown:
        raise InvalidInput(
            f"unknown query parameter(s): {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    empty = sorted(key for key, value in request.query_params.multi_items() if not value)
    if empty:
        # It would match nothing and answer an empty list: the caller's mistake (a
        # variable left unset) would read as "there is none".
        raise InvalidInput(f"query parameter {empty[0]} is empty; leave it out to not filter")
    return dict(request.query_params.items())


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds, or InvalidInput."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError as exc:
        raise InvalidInput(f"query parameter {name} must be an integer") from exc
    if not low <= value <= high:
        raise InvalidInput(f"query parameter {name} must be between {low} and {high}")
    return value


def query_float(request: Request, name: str, default: float, high: float) -> float:
    """A number query parameter between 0 and ``high``, or InvalidInput."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError as exc:
        raise InvalidInput(f"query parameter {name} must be a number") from exc
    if not 0 <= value <= high:
        raise InvalidInput(f"query parameter {name} must be between 0 and {high}")
    return value
