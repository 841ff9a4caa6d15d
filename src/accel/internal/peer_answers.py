"""Reading what a peer answered: the typed answer, or a PeerError an operator can read.

A peer's failure ends up in front of operators (a sync's error in ``/v2/agents``), so
it is said in plain words: where the answer is wrong and how, never the parser's
text with its class names, the peer's values or links to documentation.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from accel.errors import InvalidInput, PeerError
from accel.internal.peer_http import PeerAnswer
from accel.web.json_bodies import loads
from accel.web.nul import refuse_nul

Answer = TypeVar("Answer", bound=BaseModel)


def parse_answer(response: PeerAnswer, answer: type[Answer], what: str) -> Answer:
    # Parsed and checked in one pass, with no dicts built between json.loads and the
    # check (a conductor parses one per sync).
    try:
        parsed = answer.model_validate_json(response.content)
        # As in a request body (accel.web.nul.refuse_nul): text with a NUL
        # cannot be stored by PostgreSQL, and it came to the conductor's store before.
        # In JSON a NUL is always written as an escape, so the bytes say if one may be in.
        if b"\\u0000" in response.content:
            refuse_nul(loads(response.content), "answer")
    except InvalidInput as exc:
        raise PeerError(response.url, f"{what} answered garbage: {exc.message}") from exc
    except ValidationError as exc:
        raise PeerError(response.url, f"{what} answered garbage: {problems(exc)}") from exc
    except ValueError as exc:
        raise PeerError(response.url, f"{what} answered garbage: not JSON") from exc
    return parsed


def problems(exc: ValidationError, most: int = 3) -> str:
    """Where an answer is wrong and how, in a line an operator reads (a sync's error in
    /v2/agents): not pydantic's text, with its model's class name, the values (a
    driver's, whatever they hold) and a link to its documentation."""
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        if error["type"] == "json_invalid":
            return "not JSON"
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]
        ).lstrip(".")
        problems.append(f"{where or 'the answer'}: {error['msg']}")
    more = len(problems) - most
    return "; ".join(problems[:most]) + (f"; and {more} more" if more > 0 else "")


def refusal_reason(response: PeerAnswer) -> str:
    """The message a refusing peer gave, however its error body is shaped."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if isinstance(body.get(key), str):
                return str(body[key])
    return response.text[:500]
