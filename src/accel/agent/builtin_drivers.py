"""The built-in drivers an agent serves in its own process (``accel agent --drivers``).

Each is the same ``DriverService`` that ``accel driver`` runs, on an endpoint of its
own beside the agent's, and says hello to the agent over HTTP as a driver process
does: the agent cannot tell them apart, and a driver installed on its own (a
vendor's) registers beside them as before. One process instead of one per kind
holds a node's memory to a fraction of what the processes took (docs/benchmarks.md,
issue 25, has the figures).

What keeps a driver from taking the others down: its scans run in worker threads,
so a read that hangs holds one thread and that driver's discovery only (the agent
reports it failed after its timeout); a scan that raises fails that discovery only
(``DiscoveryState``); a driver app that cannot start is logged and the rest serve on
(``accel.serving``). A driver that needs its own flags (device filters, NVML off,
FPGA programming) runs as its own process.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from accel.driver.discovery import Discoverer
from accel.driver.health.monitor import HEALTH_INTERVAL
from accel.driver.health.policy import HealthPolicy
from accel.driver.nvml import nvml_for
from accel.driver.service import KEPT_HEARTBEATS, DriverService, DriverSettings
from accel.internal.intervals import HEARTBEAT_INTERVAL
from accel.internal.schemas import Kind
from accel.internal.tls import TlsFiles
from accel.internal.versions import VersionRange
from accel.serving import Served
from accel.sockets import bind, endpoint_of

# A driver's periodic hello re-registers it with an agent that restarted and forgot
# it (HELLO_INTERVAL, 10 s). A built-in driver's agent cannot restart without it, so
# its hellos only refresh ``last_hello``: once a minute spares an idle node CPU that
# every 10 s spent for nothing (docs/benchmarks.md, issue 25, has the figures).
BUILTIN_HELLO_INTERVAL = 60.0


def parse_kinds(text: str) -> tuple[Kind, ...]:
    """``GPU,QAT`` or ``all`` as kinds, each once; ValueError names a bad one."""
    if text.strip().lower() == "all":
        return tuple(Kind)
    kinds: list[Kind] = []
    for part in text.split(","):
        if part.strip():
            kind = Kind.parse(part.strip())
            if kind not in kinds:
                kinds.append(kind)
    return tuple(kinds)


def loopback_url(agent_socket: socket.socket, tls: TlsFiles | None) -> str:
    """Where a driver in the agent's process reaches it: its own address, or loopback
    where the agent listens on every address."""
    host, port = agent_socket.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls is not None else 'http'}://{shown}:{port}"


def builtin_drivers(
    kinds: Sequence[Kind],
    sysfs_root: Path,
    agent_socket: socket.socket,
    node: str,
    token: str,
    versions: VersionRange,
    tls: TlsFiles | None = None,
    hello_interval: float = BUILTIN_HELLO_INTERVAL,
    heartbeat_interval: float = HEARTBEAT_INTERVAL,
    health_interval: float | None = HEALTH_INTERVAL,
    health_policy: HealthPolicy | None = None,
) -> list[Served]:
    """One driver per kind, each bound now to a free port on the agent's host (loopback
    where the agent listens on every address), to serve beside the agent, whose
    ``heartbeat_interval`` sets how long a driver keeps an idle connection."""
    agent_url = loopback_url(agent_socket, tls)
    host = agent_url.rsplit(":", 1)[0].split("://", 1)[1].strip("[]")
    drivers: list[Served] = []
    for kind in kinds:
        sock = bind(f"[{host}]:0" if ":" in host else f"{host}:0")
        service = DriverService(
            DriverSettings(
                discoverer=Discoverer(kind, sysfs_root, nvml=nvml_for(kind, sysfs_root)),
                agent=agent_url,
                endpoint=endpoint_of(sock),
                token=token,
                versions=versions,
                node=node,
                hello_interval=hello_interval,
                tls=tls,
                health_interval=health_interval,
                health_policy=health_policy or HealthPolicy(),
            )
        )
        name = f"the built-in {kind.value} driver"
        keep_alive = KEPT_HEARTBEATS * heartbeat_interval
        drivers.append(Served(name, service.app(), sock, tls, keep_alive))
    return drivers
