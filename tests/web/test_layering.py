"""What may import what among the HTTP layers: accel.web is shared by the public API
and the internal services, so it imports neither; the public API takes the shared
pieces from it, never the internal services' app factory."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

SOURCE = Path(__file__).parents[2] / "src" / "accel"


def imported(package: str) -> dict[str, set[str]]:
    """The accel modules each module of ``package`` imports."""
    found: dict[str, set[str]] = {}
    for path in sorted((SOURCE / package).glob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[path.name] = {name for name in names if name.startswith("accel.")}
    return found


def test_the_shared_layer_imports_neither_api() -> None:
    for module, names in imported("web").items():
        assert not {n for n in names if n.startswith(("accel.api", "accel.internal"))}, module


def test_the_public_api_does_not_import_the_internal_app_factory() -> None:
    for module, names in imported("api").items():
        assert "accel.internal.server" not in names, module


def test_a_nodes_daemons_load_no_database_library() -> None:
    """A driver and an agent have no database: the error mapping they share with the
    api and the conductor must not bring SQLAlchemy into their memory, nor the command
    line the operator's and the fleet's libraries (tests/integration/test_light_node.py
    reads what running daemons load)."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, accel.cli.main, accel.driver.service, accel.agent.service, "
            "accel.agent.builtin_drivers, accel.cli.node_daemons; "
            "print(sorted({m.split('.')[0] for m in sys.modules}))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for library in ("sqlalchemy", "psycopg", "alembic", "httpx", "rich"):
        assert f"'{library}'" not in loaded, library


def test_a_node_installs_no_fleet_library() -> None:
    """``pip install accel[node]`` brings no database, migration or OpenStack library."""
    project = tomllib.loads((SOURCE.parents[1] / "pyproject.toml").read_text())["project"]
    node = [*project["dependencies"], *project["optional-dependencies"]["node"]]
    names = {re.split(r"[\[<>=!~ ]", requirement, maxsplit=1)[0].lower() for requirement in node}
    assert names & {"sqlalchemy", "alembic", "psycopg", "keystonemiddleware"} == set()
    fleet = " ".join(project["optional-dependencies"]["fleet"])
    assert all(library in fleet for library in ("sqlalchemy", "alembic", "psycopg"))
