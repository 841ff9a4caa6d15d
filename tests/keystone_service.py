"""A throwaway OpenStack Keystone for the tests: SQLite, fernet tokens, on loopback.

``scripts/ensure-keystone`` installs it into a virtual environment of its own, outside
the repository; without it the Keystone tests skip, saying why. The ``keystone``
fixture (import it into a test module) bootstraps one per test session: the admin,
a ``service`` project with Nova's service user (role ``service``) and accel's
(``admin`` and ``service``), a ``demo`` project with a member, and catalog entries for
``placement`` and ``compute`` that tests point where they need (``set_endpoint``).
Keystone serves on a socket the test bound itself (gunicorn's ``fd://``).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gunicorn_service import gunicorn
from tests.processes import bound_socket, url_of

VERSION = "30.0.0"
START_SECONDS = 90.0
PASSWORD = "keystone-test-password"
# name -> (project, roles)
USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nova": ("service", ("service",)),
    "accel": ("service", ("admin", "service")),
    "alice": ("demo", ("member",)),
}
SERVICES = {"placement": "http://127.0.0.1:9/placement", "compute": "http://127.0.0.1:9/v2.1"}


def keystone_venv() -> Path | None:
    cache = Path(os.environ.get("ACCEL_CACHE") or Path.home() / ".cache" / "accel")
    venv = cache / f"keystone-{VERSION}"
    return venv if (venv / ".installed-stamp").exists() else None


@dataclass
class ThrowawayKeystone:
    url: str  # the root; Identity v3 is under /v3
    log: Path
    _admin: str = ""
    _endpoints: dict[str, str] = field(default_factory=dict)  # service type -> endpoint id

    @property
    def auth_url(self) -> str:
        return self.url + "/v3"

    def token(self, user: str, project: str | None = None) -> str:
        """A project-scoped token of ``user`` (admin: the bootstrap admin)."""
        project = project or (USERS[user][0] if user in USERS else "admin")
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "domain": {"id": "default"}, "password": PASSWORD}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        answer = httpx.post(self.auth_url + "/auth/tokens", json=body, timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.headers["X-Subject-Token"]

    def credentials(self, user: str) -> dict[str, str]:
        """What ``--openstack-credentials-file`` holds for ``user``."""
        return {
            "username": user,
            "password": PASSWORD,
            "project_name": USERS[user][0],
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        }

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        if not self._admin:
            self._admin = self.token("admin")
        answer = httpx.request(
            method,
            self.auth_url + path,
            json=body,
            headers={"X-Auth-Token": self._admin},
            timeout=30,
        )
        assert answer.status_code < 300, answer.text
        return answer.json() if answer.content else None

    def set_endpoint(self, service_type: str, url: str) -> None:
        """Points the catalog's (only, public) endpoint of ``service_type`` at ``url``."""
        self.admin(
            "PATCH", f"/endpoints/{self._endpoints[service_type]}", {"endpoint": {"url": url}}
        )

    def _populate(self) -> None:
        roles = {r["name"]: r["id"] for r in self.admin("GET", "/roles")["roles"]}
        for role in ("service", "member", "admin"):
            if role not in roles:
                roles[role] = self.admin("POST", "/roles", {"role": {"name": role}})["role"]["id"]
        projects = {}
        for project in ("service", "demo"):
            made = self.admin(
                "POST", "/projects", {"project": {"name": project, "domain_id": "default"}}
            )
            projects[project] = made["project"]["id"]
        for name, (project, user_roles) in USERS.items():
            user = {"name": name, "password": PASSWORD, "domain_id": "default"}
            user_id = self.admin("POST", "/users", {"user": user})["user"]["id"]
            for role in user_roles:
                self.admin(
                    "PUT", f"/projects/{projects[project]}/users/{user_id}/roles/{roles[role]}"
                )
        for service_type, url in SERVICES.items():
            service = {"type": service_type, "name": service_type}
            service_id = self.admin("POST", "/services", {"service": service})["service"]["id"]
            endpoint = {
                "service_id": service_id,
                "interface": "public",
                "url": url,
                "region_id": "RegionOne",
            }
            made = self.admin("POST", "/endpoints", {"endpoint": endpoint})
            self._endpoints[service_type] = made["endpoint"]["id"]


def _manage(venv: Path, conf: Path, log: Path, *args: str) -> None:
    with open(log, "ab") as output:
        done = subprocess.run(
            [str(venv / "bin" / "keystone-manage"), "--config-file", str(conf), *args],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=300,
            check=False,
        )
    if done.returncode != 0:
        raise AssertionError(f"keystone-manage {args[0]} failed\n" + log.read_text()[-4000:])


@contextmanager
def throwaway_keystone(venv: Path, folder: Path) -> Iterator[ThrowawayKeystone]:
    """Keystone on a fresh SQLite database in ``folder``, until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "keystone.conf"
    conf.write_text(
        "[DEFAULT]\ndebug = False\n"
        f"[database]\nconnection = sqlite:///{folder / 'keystone.sqlite'}\n"
        "[token]\nprovider = fernet\n"
        f"[fernet_tokens]\nkey_repository = {folder / 'fernet-keys'}\n"
        f"[fernet_receipts]\nkey_repository = {folder / 'fernet-receipts'}\n"
        f"[credential]\nkey_repository = {folder / 'credential-keys'}\n"
    )
    log = folder / "keystone.log"
    sock = bound_socket()
    url = url_of(sock)
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    _manage(venv, conf, log, "db_sync")
    _manage(venv, conf, log, "fernet_setup", "--keystone-user", user, "--keystone-group", group)
    _manage(
        venv,
        conf,
        log,
        "bootstrap",
        "--bootstrap-password",
        PASSWORD,
        "--bootstrap-public-url",
        url,
        "--bootstrap-region-id",
        "RegionOne",
    )
    # Keystone's configuration reads the process's arguments, which are gunicorn's:
    # the app is imported through a module that hides them.
    (folder / "keystone_app.py").write_text(
        "import sys\nsys.argv = sys.argv[:1]\nfrom keystone.wsgi.api import application\n"
    )
    options = ["-w", "1", "--threads", "4", "--pythonpath", str(folder), "keystone_app:application"]
    with gunicorn(
        "Keystone",
        venv,
        options,
        sock,
        log,
        {"OS_KEYSTONE_CONFIG_FILES": str(conf)},
        url + "/v3",
        START_SECONDS,
    ):
        keystone = ThrowawayKeystone(url, log)
        keystone._populate()
        yield keystone


@pytest.fixture(scope="session")
def keystone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThrowawayKeystone]:
    """One real Keystone per test session (per xdist worker)."""
    venv = keystone_venv()
    if venv is None:
        pytest.skip("no Keystone here (scripts/ensure-keystone installs it)")
    with throwaway_keystone(venv, tmp_path_factory.mktemp("keystone")) as server:
        yield server
