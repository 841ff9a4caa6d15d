"""Reading a request's JSON body: every body accel takes, public or internal, comes
through ``read_json`` or ``read_body``.

415 unless labelled JSON, 413 over ``MAX_BODY_BYTES``, 400 when it is not JSON, is
nested too deep (accel.web.json_bodies), carries NUL characters, or does not
fit the model.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from accel.errors import InvalidInput, TooLarge, UnsupportedMediaType
from accel.web.json_bodies import NotJson, is_json_media_type, loads
from accel.web.nul import refuse_nul
from accel.web.problems import validation_problems

MAX_BODY_BYTES = 1 << 20
Body = TypeVar("Body", bound=BaseModel)


async def read_json(request: Request) -> Any:
    """The request's JSON document, checked for everything but its fields."""
    return _parse_json(await _read_raw(request))


async def read_body(request: Request, model: type[Body]) -> Body:
    """The request's JSON body checked against ``model``, or InvalidInput naming the field.

    A body that is valid and holds no NUL is parsed and checked in one pass by
    pydantic's own JSON parser, cheaper than ``json.loads`` and a check of the
    objects it built (this is every heartbeat). Anything else takes the long way,
    which names what is wrong as it always has.
    """
    raw = await _read_raw(request)
    if b"\\u0000" not in raw and b"\x00" not in raw:
        try:
            return model.model_validate_json(raw)
        except ValidationError:
            pass
    document = _parse_json(raw)
    if not isinstance(document, dict):
        raise InvalidInput("body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        problems = validation_problems(exc)
        named = ", ".join(p.field for p in problems)
        raise InvalidInput(f"invalid {model.__name__}: {named}", problems) from exc


async def _read_raw(request: Request) -> bytes:
    """The request's body, or TooLarge past the limit (refused on its declared size
    before it is read, where it declares one)."""
    content_type = request.headers.get("content-type")
    if not is_json_media_type(content_type):
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, not {content_type or 'missing'}"[:200]
        )
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise TooLarge(f"body is larger than {MAX_BODY_BYTES} bytes")
    # Read piece by piece: a chunked body declares no size, and is refused as soon as
    # it passes the limit rather than once all of it is held in memory.
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise TooLarge(f"body is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # The client went, or the server closed a body that did not arrive in time
        # (accel.http_protocol): nobody is left to answer, but the request ends as
        # a refusal rather than an error in the log.
        raise InvalidInput("the body did not arrive: the connection closed") from exc
    return b"".join(chunks)


def _parse_json(raw: bytes) -> Any:
    try:
        document = loads(raw)
    except NotJson as exc:
        raise InvalidInput(f"body is {exc}") from exc
    refuse_nul(document)
    return document
