"""docs/architecture.md stays true: every `name` (`path`) it gives exists.

The page follows a hello, a sync, a cached read and a bind through the code, one
function a step. Code moves; this test fails on the first name or file the page gets
wrong, so the page is fixed in the same change. Names are looked up with ``ast``,
without importing anything: ``Class.method`` is a method (or nested class) in that
class's body, a bare name a function, class or assignment at the module's top level.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"

# `AgentService.hello` (`src/accel/agent/service.py`), possibly across a line break.
PAIR = re.compile(r"`([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)`\s*\(`(src/[\w./-]+\.py)`\)")
# Any file or folder of the source named anywhere on the page.
PATH = re.compile(r"src/accel(?:/[\w.-]+)*")
STEP = re.compile(r"^\d+\. ")


def pairs(text: str) -> list[tuple[str, str]]:
    return PAIR.findall(text)


def steps(text: str) -> list[str]:
    """Each numbered step with its continuation lines."""
    found: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if STEP.match(line):
            current = [line]
            found.append("")
        elif current is not None and line.startswith("   ") and line.strip():
            current.append(line)
        else:
            current = None
            continue
        found[-1] = "\n".join(current)
    return found


@functools.cache
def module(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), filename=path)


def names_in(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    named: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            named[node.name] = node
        elif isinstance(node, ast.Assign):
            named.update((t.id, node) for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            named[node.target.id] = node
    return named


def defined(path: str, dotted: str) -> bool:
    body: list[ast.stmt] = module(path).body
    for part in dotted.split("."):
        node = names_in(body).get(part)
        if node is None:
            return False
        body = node.body if isinstance(node, ast.ClassDef) else []
    return True


def test_the_page_names_code_in_the_checked_form() -> None:
    # A guard on the pattern itself: a page whose names it no longer finds would pass.
    assert len(pairs(DOC.read_text())) > 50


def test_every_named_file_exists() -> None:
    named = {path.rstrip(".") for path in PATH.findall(DOC.read_text())}
    missing = sorted(path for path in named if not (ROOT / path).exists())
    assert missing == [], f"docs/architecture.md names files that do not exist: {missing}"


def test_every_named_function_class_or_method_exists() -> None:
    wrong = [
        f"`{name}` (`{path}`)"
        for name, path in sorted(set(pairs(DOC.read_text())))
        if not (ROOT / path).is_file() or not defined(path, name)
    ]
    assert wrong == [], "docs/architecture.md names code that is not there: " + ", ".join(wrong)


def test_every_step_names_the_code_it_passes() -> None:
    listed = steps(DOC.read_text())
    assert len(listed) >= 4 * 8, "four flows of several steps each"
    bare = [step.splitlines()[0] for step in listed if not pairs(step)]
    assert bare == [], f"steps naming no `function` (`file`): {bare}"
