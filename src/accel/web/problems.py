"""A pydantic validation failure told as the field problems a 400 answer carries."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from accel.errors import FieldProblem


def validation_problems(exc: ValidationError) -> list[FieldProblem]:
    """Each field pydantic refused, named by its dotted path."""
    return [
        FieldProblem(".".join(str(part) for part in error["loc"]) or "body", error["msg"])
        for error in exc.errors()
    ]


def problems_text(problems: Sequence[FieldProblem]) -> str:
    """The problems in one line, for an error's message (the list goes beside it)."""
    return "; ".join(f"{p.field}: {p.message}" for p in problems)
