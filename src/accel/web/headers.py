"""Setting response headers from ASGI middleware, below Starlette's response objects."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.types import Message


def replace_headers(start: Message, pairs: Sequence[tuple[bytes, bytes]]) -> None:
    """Puts ``pairs`` (lower-case names, as ASGI has them) in a response start message,
    in place of any headers of the same names: one pass over the list, where
    MutableHeaders scans and re-encodes it for every header set, on every internal
    call and every cached api read."""
    names = {name for name, _ in pairs}
    kept = [pair for pair in start.get("headers", ()) if pair[0].lower() not in names]
    start["headers"] = [*kept, *pairs]
