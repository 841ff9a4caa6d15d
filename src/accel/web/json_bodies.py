"""JSON as accel reads it off the wire: bounded in depth, and only when labelled JSON.

Every JSON document accel parses from a peer or a client (a request body, a peer's
answer, the Identity service's answer) comes through ``loads``. CPython's ``json``
recurses once per level and a thousand levels exhaust the interpreter's stack (a
RecursionError, which no handler expected). pydantic's parser stops at 200 levels on
its own, and accel refuses anything deeper than ``MAX_DEPTH``: no document it takes
needs more than a handful of levels.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

# The deepest document accel takes: a device profile or a setup's parameters are four
# or five levels; thirty-two leaves free-form fields ample room.
MAX_DEPTH = 32


class NotJson(ValueError):
    """Not a JSON document accel takes: malformed, not UTF-8, or nested too deep."""


def loads(raw: bytes | str) -> Any:
    """The document in ``raw``; NotJson (a ValueError) when it is not one accel takes."""
    try:
        # NaN and Infinity are not JSON (RFC 8259), and no field of accel's means them.
        document = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        if "recursion limit" in str(exc):
            raise NotJson(f"nested deeper than {MAX_DEPTH} levels") from exc
        raise NotJson(f"not valid JSON ({exc})") from exc
    if depth(document) > MAX_DEPTH:
        raise NotJson(f"nested deeper than {MAX_DEPTH} levels")
    return document


def depth(document: Any) -> int:
    """How many arrays and objects deep ``document`` goes (a scalar is 0); walked with
    a list, not recursion, so that no depth can exhaust the stack."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(document, 0)]
    while pending:
        value, level = pending.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        level += 1
        if level > deepest:
            deepest = level
            if deepest > MAX_DEPTH:
                return deepest  # deep enough to refuse: the rest need not be walked
        pending.extend((child, level) for child in children if isinstance(child, dict | list))
    return deepest


def is_json_media_type(content_type: str | None) -> bool:
    """Whether a Content-Type says JSON: ``application/json`` or a JSON-based type
    (``application/<anything>+json``), with any parameters (a charset).

    A browser sends a cross-site POST without asking first only as text/plain, a form
    or multipart; requiring a JSON type keeps web pages from writing to a local API.
    """
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    kind, _, subtype = media_type.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))
