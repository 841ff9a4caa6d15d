"""NUL characters, refused in any text accel takes: request bodies, query parameters
and peers' answers alike. PostgreSQL cannot store them, and nobody needs them."""

from __future__ import annotations

from typing import Any

from accel.errors import InvalidInput


def refuse_nul(document: Any, where: str = "body") -> None:
    """InvalidInput naming the first place in ``document`` that holds a NUL."""
    if isinstance(document, str):
        if "\x00" in document:
            raise InvalidInput(f"{where} contains a NUL character")
    elif isinstance(document, dict):
        for key, value in document.items():
            refuse_nul(key, where)
            refuse_nul(value, f"{where}.{key}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            refuse_nul(value, f"{where}[{index}]")
