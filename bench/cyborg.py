"""OpenStack Cyborg's own API server on accel's benchmark inventory, for comparison.

``cyborg_api`` runs the openstack-cyborg package from PyPI in its own venv, on a
SQLite database holding the same devices, deployables, attributes and attach
handles (same uuids) as an accel database filled by ``bench.api.fill_database``,
under gunicorn with one sync worker, and yields its base URL. Where Cyborg does
not install or start, it raises ``CyborgUnavailable`` instead, so a benchmark can
say so and go on.

What this deployment leaves out, and the caller should know:
- no keystone: the authtoken filter is dropped and a wrapper sets the identity
  headers keystone would (an admin in a fixed project, a uuid as Cyborg
  requires) where a request has none;
- no message bus: the conductor's ``arq_create`` (one insert) runs in the api
  process instead of over RPC, which flatters Cyborg's ARQ create a little;
- gunicorn's sync worker answers one request per connection (Connection: close),
  so a keep-alive client must reconnect.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

INSTALL_TIMEOUT_S = 900.0
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
PROFILE = '{"groups": [{"resources:PGPU": "1"}]}'
PROFILE_NAME = "bench-gpu"
CACHED_VENV = Path.home() / ".cache" / "accel-bench" / "cyborg-venv"

# The authtoken filter is what needs keystone; the rest of the stock pipeline stays.
PASTE_INI = """[pipeline:main]
pipeline = cors http_proxy_to_wsgi request_id api_v2

[app:api_v2]
paste.app_factory = cyborg.api.app:app_factory

[filter:request_id]
paste.filter_factory = oslo_middleware:RequestId.factory

[filter:cors]
paste.filter_factory = oslo_middleware.cors:filter_factory
oslo_config_project = cyborg

[filter:http_proxy_to_wsgi]
paste.filter_factory = oslo_middleware.http_proxy_to_wsgi:HTTPProxyToWSGI.factory
"""

# Loaded by gunicorn inside Cyborg's venv. oslo.config parses sys.argv, which under
# gunicorn holds gunicorn's own arguments, hence the swap.
WSGI_SHIM = """import sys

sys.argv = [sys.argv[0], "--config-file", {conf!r}]

from cyborg.api import wsgi_app
from cyborg.conductor import rpcapi


def _arq_create(self, context, obj_extarq, devprof_id):
    obj_extarq.create(context, devprof_id)
    return obj_extarq


rpcapi.ConductorAPI.arq_create = _arq_create
_app = wsgi_app.init_application()
_IDENTITY = {{
    "HTTP_X_USER_ID": "b3c4a1d2-0000-4000-8000-00000000be7c",
    "HTTP_X_PROJECT_ID": "b3c4a1d2-0000-4000-8000-00000000be7c",
    "HTTP_X_ROLES": "admin,member,reader",
}}


def application(environ, start_response):
    for name, value in _IDENTITY.items():
        environ.setdefault(name, value)
    return _app(environ, start_response)
"""


VERSION_SCRIPT = "import importlib.metadata as m; print(m.version('openstack-cyborg'))"


class CyborgUnavailable(Exception):
    """Cyborg could not be installed, set up or started here; the message says why."""


def _usable(venv: Path) -> bool:
    return all((venv / "bin" / tool).exists() for tool in ("gunicorn", "cyborg-dbsync"))


def find_venv() -> Path:
    """A venv with openstack-cyborg and gunicorn: ACCEL_BENCH_CYBORG_VENV, else one
    installed once (minutes) into ~/.cache/accel-bench and kept for later runs."""
    chosen = os.environ.get("ACCEL_BENCH_CYBORG_VENV")
    venv = Path(chosen) if chosen else CACHED_VENV
    if _usable(venv):
        return venv
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / "cyborg-install.log"
    deadline = time.monotonic() + INSTALL_TIMEOUT_S
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(venv / "bin" / "pip"), "install", "openstack-cyborg", "gunicorn"],
    ]
    with log.open("wb") as output:
        for step in steps:
            try:
                subprocess.run(
                    step,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    timeout=max(1.0, deadline - time.monotonic()),
                    check=True,
                )
            except (OSError, subprocess.SubprocessError) as error:
                raise CyborgUnavailable(f"install failed ({error}), see {log}") from error
    if not _usable(venv):
        raise CyborgUnavailable(f"installed without gunicorn or cyborg-dbsync, see {log}")
    return venv


def _run_setup(command: list[str], log: Path) -> None:
    with log.open("ab") as output:
        try:
            subprocess.run(
                command, stdout=output, stderr=subprocess.STDOUT, timeout=120, check=True
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise CyborgUnavailable(f"{command[0]} failed ({error}), see {log}") from error


def copy_inventory(accel_database: Path, cyborg_database: Path) -> None:
    """Accel's present devices and what hangs off them, into Cyborg's tables with the
    same ids and uuids; plus the benchmark's device profile."""
    db = sqlite3.connect(cyborg_database)
    try:
        db.execute("ATTACH DATABASE ? AS accel", (str(accel_database),))
        db.executescript("""
            INSERT INTO devices (id, uuid, type, vendor, model, std_board_info,
                vendor_board_info, hostname, status, created_at, updated_at)
            SELECT id, uuid, type, vendor, model, std_board_info, vendor_board_info,
                hostname, status, created_at, updated_at FROM accel.devices WHERE present;
            INSERT INTO deployables (id, uuid, parent_id, root_id, name, num_accelerators,
                device_id, rp_uuid, driver_name, bitstream_id, created_at, updated_at)
            SELECT id, uuid, parent_id, root_id, name, num_accelerators, device_id, rp_uuid,
                driver_name, bitstream_id, created_at, updated_at FROM accel.deployables
            WHERE device_id IN (SELECT id FROM devices);
            INSERT INTO attributes (id, uuid, deployable_id, key, value, created_at)
            SELECT id, uuid, deployable_id, key, value, created_at FROM accel.attributes
            WHERE deployable_id IN (SELECT id FROM deployables);
        """)
        # Cyborg's attach handles hang off a control path id too (the device's PCI
        # function as the driver reported it), which accel does not keep as a table.
        devices = db.execute("SELECT id, uuid, created_at, pci_address FROM accel.devices")
        db.executemany(
            "INSERT INTO controlpath_ids (id, uuid, device_id, cpid_type, cpid_info, created_at)"
            " SELECT ?, ?, ?, 'PCI', ?, ? WHERE ? IN (SELECT id FROM devices)",
            [
                (id_, str(uuid.uuid5(uuid.UUID(uuid_), "cpid")), id_, _pci_json(pci), at, id_)
                for id_, uuid_, at, pci in devices.fetchall()
            ],
        )
        db.execute("""
            INSERT INTO attach_handles (id, uuid, deployable_id, cpid_id, in_use,
                attach_type, attach_info, created_at)
            SELECT h.id, h.uuid, h.deployable_id, d.device_id, h.in_use, h.attach_type,
                h.attach_info, h.created_at
            FROM accel.attach_handles h JOIN deployables d ON d.id = h.deployable_id
        """)
        db.execute(
            "INSERT INTO device_profiles (uuid, name, profile_json, created_at)"
            " VALUES (?, ?, ?, datetime('now'))",
            (str(uuid.uuid4()), PROFILE_NAME, PROFILE),
        )
        db.commit()
    finally:
        db.close()


def _pci_json(address: str | None) -> str:
    domain, bus, rest = (address or "0000:00:00.0").split(":")
    device, function = rest.split(".")
    return (
        f'{{"bus": "{bus}", "device": "{device}", "domain": "{domain}", "function": "{function}"}}'
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/device_profiles", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass(frozen=True)
class CyborgServer:
    url: str  # e.g. http://127.0.0.1:41234
    version: str  # of the openstack-cyborg package


@contextmanager
def cyborg_api(workdir: Path, accel_database: Path) -> Iterator[CyborgServer]:
    """Cyborg's API on a copy of the inventory in ``accel_database`` (a SQLite file)."""
    workdir.mkdir(parents=True, exist_ok=True)
    venv = find_venv()
    version = (
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", VERSION_SCRIPT],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()
        or "(unknown version)"
    )
    database, conf, log = workdir / "cyborg.db", workdir / "cyborg.conf", workdir / "cyborg.log"
    database.unlink(missing_ok=True)
    (workdir / "cyborg-api-paste.ini").write_text(PASTE_INI)
    conf.write_text(
        # fake:// builds the conductor client without a bus; nothing is sent on it.
        f"[DEFAULT]\ntransport_url = fake://\nlog_file = {log}\n\n"
        f"[database]\nconnection = sqlite:///{database}\n\n"
        f"[api]\napi_paste_config = {workdir / 'cyborg-api-paste.ini'}\n"
    )
    (workdir / "cyborg_wsgi.py").write_text(WSGI_SHIM.format(conf=str(conf)))
    # create_schema, not upgrade: Cyborg's migrations ALTER COLUMN, which SQLite lacks.
    dbsync = [str(venv / "bin" / "cyborg-dbsync"), "--config-file", str(conf), "create_schema"]
    _run_setup(dbsync, log)
    copy_inventory(accel_database, database)

    listener = socket.create_server(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    with (workdir / "cyborg-gunicorn.log").open("ab") as output:
        server = subprocess.Popen(
            [
                *(str(venv / "bin" / "gunicorn"), "--workers", "1", "--worker-class", "sync"),
                *("--bind", f"fd://{listener.fileno()}", "--chdir", str(workdir)),
                "cyborg_wsgi:application",
            ],
            pass_fds=(listener.fileno(),),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    listener.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url):
            if server.poll() is not None or time.monotonic() > deadline:
                raise CyborgUnavailable(f"cyborg-api did not answer, see {workdir}/cyborg*.log")
            time.sleep(0.2)
        yield CyborgServer(url, version)
    finally:
        server.terminate()
        try:
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(STOP_TIMEOUT_S)
