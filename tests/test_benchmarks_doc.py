"""docs/benchmarks.md links every dated file of docs/benchmarks/, and every file it
links exists: a run appended to a new day's file cannot drop out of the history."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
INDEX = DOCS / "benchmarks.md"


def linked() -> set[str]:
    return set(re.findall(r"\]\((benchmarks/[^)#]+)\)", INDEX.read_text()))


def test_every_dated_file_is_in_the_history() -> None:
    dated = {f"benchmarks/{path.name}" for path in (DOCS / "benchmarks").glob("*.md")}
    assert dated, "docs/benchmarks/ holds no dated file"
    assert dated - linked() == set(), "add these to the history in docs/benchmarks.md"


def test_every_linked_file_exists() -> None:
    missing = {link for link in linked() if not (DOCS / link).is_file()}
    assert missing == set()


def test_dated_files_are_named_by_date() -> None:
    for path in (DOCS / "benchmarks").glob("*.md"):
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}\.md", path.name), path.name
