"""``accel driver`` and ``accel agent``: the daemons that run on every node."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

from accel.cli.health_options import health_options
from accel.cli.options import (
    device_filter,
    device_filter_options,
    driver_timeout_option,
    heartbeat_interval_option,
    hello_interval_option,
    internal_options,
    internal_token,
    listen_socket,
    networks,
    option,
    positive,
    tls_files,
    version_range,
)
from accel.internal.endpoints import check_node_name
from accel.internal.schemas import Kind
from accel.sockets import endpoint_of

if TYPE_CHECKING:
    from accel.driver.health.policy import HealthPolicy

log = logging.getLogger(__name__)


def _kind(ctx: click.Context, param: click.Parameter, value: str) -> Kind:
    try:
        return Kind.parse(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not one of {', '.join(k.value for k in Kind)}"
        ) from exc


def _kinds(ctx: click.Context, param: click.Parameter, value: str) -> tuple[Kind, ...]:
    from accel.agent.builtin_drivers import parse_kinds

    try:
        return parse_kinds(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r}: name kinds among {', '.join(k.value for k in Kind)}, or all"
        ) from exc


def _program_tool(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    from accel.driver.setup.fpga import parse_tool_template

    if value is None or not value.strip():
        return None
    try:
        return parse_tool_template(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command()
@option("--kind", required=True, callback=_kind, help="GPU, FPGA, QAT, NIC or AICHIP.")
@option(
    "--agent", required=True, metavar="URL", help="The node's agent, e.g. http://127.0.0.1:6671."
)
@option("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="Port 0 picks a free port.")
@option(
    "--sysfs-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    help="Where discovery reads sys/bus/pci/devices.",
)
@option("--node", default=None, help="Node name for hardware uuids (default: the agent's).")
@hello_interval_option
@option("--timeout", type=float, default=5.0, callback=positive)
@device_filter_options
@option("--nvml/--no-nvml", default=True, help="Ask NVIDIA's NVML about GPUs, where present.")
@option(
    "--fpga-program-tool",
    default=None,
    callback=_program_tool,
    metavar="COMMAND",
    help="How FPGA setup loads a bitstream: a command (split like a shell, never run by "
    "one) with {address}, {bus} and {bitstream}, e.g. 'fpgaconf -B 0x{bus} {bitstream}'.",
)
@option(
    "--bitstream-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The only folder FPGA setup loads bitstreams from.",
)
@option(
    "--setup-timeout",
    type=float,
    default=600.0,
    callback=positive,
    help="Seconds a setup tool (FPGA programming) may run before it is killed.",
)
@health_options
@internal_options
def driver(
    kind: Kind,
    agent: str,
    listen: str,
    sysfs_root: Path,
    node: str | None,
    hello_interval: float,
    timeout: float,
    allow: tuple[str, ...],
    deny: tuple[str, ...],
    nvml: bool,
    fpga_program_tool: tuple[str, ...] | None,
    bitstream_dir: Path | None,
    setup_timeout: float,
    health_interval: float,
    health_policy: HealthPolicy,
    listen_fd: int | None,
    advertise: str | None,
    internal_token_file: Path | None,
    internal_version_max: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    log_level: str,
) -> None:
    """Discover one kind of hardware on this node and serve it to the agent."""
    from accel.driver.discovery import Discoverer
    from accel.driver.nvml import nvml_for
    from accel.driver.service import KEPT_HEARTBEATS, DriverService, DriverSettings
    from accel.driver.setup import SetupConfig
    from accel.internal.intervals import HEARTBEAT_INTERVAL
    from accel.serving import configure_logging, serve

    configure_logging(f"driver[{kind.value}]", log_level)
    settings_token = internal_token(internal_token_file)
    versions = version_range(internal_version_max)
    tls = tls_files(tls_cert, tls_key, tls_ca)
    discoverer = Discoverer(
        kind,
        sysfs_root,
        device_filter(allow, deny),
        nvml=nvml_for(kind, sysfs_root, nvml),
    )
    sock = listen_socket(listen, listen_fd)
    service = DriverService(
        DriverSettings(
            discoverer=discoverer,
            agent=agent,
            endpoint=endpoint_of(sock, advertise),
            token=settings_token,
            versions=versions,
            node=node,
            hello_interval=hello_interval,
            timeout=timeout,
            tls=tls,
            setup=SetupConfig(
                program_tool=fpga_program_tool,
                bitstream_dir=bitstream_dir,
                timeout=setup_timeout,
            ),
            health_interval=health_interval,
            health_policy=health_policy,
        )
    )
    log.info(
        "%s driver listening on %s, reading %s (names from %s, NVML %s)",
        kind.value,
        service.settings.endpoint,
        sysfs_root,
        discoverer.names.source or "nowhere",
        "on" if discoverer.nvml else "off",
    )
    if kind is Kind.FPGA and (fpga_program_tool is None or bitstream_dir is None):
        log.info("FPGA programming is off: it needs --fpga-program-tool and --bitstream-dir")
    # Its agent's heartbeat interval is not known here: the default one's.
    serve(service.app(), sock, tls, keep_alive=KEPT_HEARTBEATS * HEARTBEAT_INTERVAL)


@click.command()
@option(
    "--conductor",
    required=True,
    metavar="URL[,URL...]",
    help="Conductors in order of preference; the agent fails over between them.",
)
@option("--listen", default="0.0.0.0:6671", metavar="HOST:PORT")
@option("--name", default=None, help="This node's name (default: the hostname).")
@option(
    "--resource-provider-name",
    default=None,
    metavar="NAME",
    help="The name Nova's compute node has in Placement, where it is not --name (often "
    "the node's FQDN): the root of the node's accelerators there.",
)
@heartbeat_interval_option
@driver_timeout_option
@option(
    "--drivers",
    default="",
    callback=_kinds,
    metavar="KIND[,KIND...]|all",
    help="Serve these kinds' drivers in this process, each on its own port (accel up: "
    "all). A driver run on its own (accel driver) registers beside them.",
)
@option(
    "--sysfs-root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    help="Where the built-in drivers read sys/bus/pci/devices.",
)
@option(
    "--allowed-driver-networks",
    default=None,
    metavar="CIDR[,CIDR...]",
    help="Networks drivers may announce besides their own address.",
)
@health_options
@internal_options
def agent(
    conductor: str,
    listen: str,
    name: str | None,
    resource_provider_name: str | None,
    heartbeat_interval: float,
    driver_timeout: float,
    drivers: tuple[Kind, ...],
    sysfs_root: Path,
    allowed_driver_networks: str | None,
    health_interval: float,
    health_policy: HealthPolicy,
    listen_fd: int | None,
    advertise: str | None,
    internal_token_file: Path | None,
    internal_version_max: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    log_level: str,
) -> None:
    """Wrangle this node's drivers and report to a conductor."""
    from accel.agent.builtin_drivers import builtin_drivers
    from accel.agent.service import AgentService, AgentSettings
    from accel.serving import configure_logging, serve

    configure_logging("agent", log_level)
    conductors = tuple(part.strip() for part in conductor.split(",") if part.strip())
    if not conductors:
        raise click.BadParameter("name at least one conductor", param_hint="--conductor")
    settings_token = internal_token(internal_token_file)
    versions = version_range(internal_version_max)
    tls = tls_files(tls_cert, tls_key, tls_ca)
    allowed = networks(allowed_driver_networks, "--allowed-driver-networks")
    try:
        node = check_node_name(name or socket.gethostname())
    except ValueError as exc:  # a conductor would refuse every hello it sent
        raise click.BadParameter(f"{exc}; name the node with --name", param_hint="--name") from exc
    sock = listen_socket(listen, listen_fd)
    service = AgentService(
        AgentSettings(
            name=node,
            conductors=conductors,
            endpoint=endpoint_of(sock, advertise),
            token=settings_token,
            versions=versions,
            heartbeat_interval=heartbeat_interval,
            driver_timeout=driver_timeout,
            allowed_driver_networks=allowed,
            tls=tls,
            resource_provider_name=resource_provider_name or None,
        )
    )
    beside = builtin_drivers(
        drivers,
        sysfs_root,
        sock,
        node,
        settings_token,
        versions,
        tls,
        heartbeat_interval=heartbeat_interval,
        health_interval=health_interval,
        health_policy=health_policy,
    )
    log.info(
        "agent %s listening on %s%s",
        service.settings.name,
        service.settings.endpoint,
        f", with built-in drivers for {', '.join(k.value for k in drivers)} reading {sysfs_root}"
        if drivers
        else "",
    )
    serve(service.app(), sock, tls, beside=beside)
