"""``accel driver|agent|conductor|api``: each component as its own process."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine

from accel.cli.options import (
    default_database,
    device_filter,
    device_filter_options,
    internal_options,
    internal_token,
    networks,
    option,
    positive,
    tls_files,
    tls_options,
    version_range,
)
from accel.internal.auth import TokenMissing, load_token
from accel.internal.schemas import Kind
from accel.sockets import adopt, bind, endpoint_of

log = logging.getLogger(__name__)


def _socket(listen: str, listen_fd: int | None) -> socket.socket:
    if listen_fd is not None:
        return adopt(listen_fd)
    try:
        return bind(listen)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(
            f"cannot listen on {listen}: {exc}", param_hint="--listen"
        ) from exc


def _engine(database: str) -> Engine:
    # Imported here: the database layer is slow to import and most commands skip it.
    from sqlalchemy.exc import ArgumentError

    from accel.db.engine import make_engine

    try:
        return make_engine(database)
    except (ValueError, ArgumentError, ImportError) as exc:
        raise click.BadParameter(str(exc), param_hint="--database") from exc


def _kind(ctx: click.Context, param: click.Parameter, value: str) -> Kind:
    try:
        return Kind.parse(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is not one of {', '.join(k.value for k in Kind)}"
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
@option("--hello-interval", type=float, default=10.0, callback=positive)
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
    from accel.driver.nvml import load_nvml
    from accel.driver.service import DriverService, DriverSettings
    from accel.driver.setup import SetupConfig
    from accel.serving import configure_logging, serve

    configure_logging(f"driver[{kind.value}]", log_level)
    settings_token = internal_token(internal_token_file)
    versions = version_range(internal_version_max)
    tls = tls_files(tls_cert, tls_key, tls_ca)
    discoverer = Discoverer(
        kind,
        sysfs_root,
        device_filter(allow, deny),
        # NVML speaks for this machine's GPUs; a fake tree's GPUs are not them.
        nvml=load_nvml()
        if nvml and kind is Kind.GPU and sysfs_root.resolve() == Path("/")
        else None,
    )
    sock = _socket(listen, listen_fd)
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
    serve(service.app(), sock, tls)


@click.command()
@option(
    "--conductor",
    required=True,
    metavar="URL[,URL...]",
    help="Conductors in order of preference; the agent fails over between them.",
)
@option("--listen", default="0.0.0.0:6671", metavar="HOST:PORT")
@option("--name", default=None, help="This node's name (default: the hostname).")
@option("--heartbeat-interval", type=float, default=10.0, callback=positive)
@option("--driver-timeout", type=float, default=10.0, callback=positive)
@option(
    "--allowed-driver-networks",
    default=None,
    metavar="CIDR[,CIDR...]",
    help="Networks drivers may announce besides their own address.",
)
@internal_options
def agent(
    conductor: str,
    listen: str,
    name: str | None,
    heartbeat_interval: float,
    driver_timeout: float,
    allowed_driver_networks: str | None,
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
    sock = _socket(listen, listen_fd)
    service = AgentService(
        AgentSettings(
            name=name or socket.gethostname(),
            conductors=conductors,
            endpoint=endpoint_of(sock, advertise),
            token=settings_token,
            versions=versions,
            heartbeat_interval=heartbeat_interval,
            driver_timeout=driver_timeout,
            allowed_driver_networks=allowed,
            tls=tls,
        )
    )
    log.info("agent %s listening on %s", service.settings.name, service.settings.endpoint)
    serve(service.app(), sock, tls)


@click.command()
@option("--listen", default="0.0.0.0:6670", metavar="HOST:PORT")
@option(
    "--database",
    default=default_database,
    metavar="URL",
    help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
)
@option("--name", default=None, help="This conductor's name (default: host:port).")
@option(
    "--heartbeat-interval",
    type=float,
    default=10.0,
    callback=positive,
    help="The agents' heartbeat interval.",
)
@option(
    "--agent-down-after",
    type=float,
    default=None,
    callback=positive,
    help="Seconds without a heartbeat before an agent is DOWN [default: 3 intervals].",
)
@option("--resync-interval", type=float, default=60.0, callback=positive)
@option("--discovery-timeout", type=float, default=30.0, callback=positive)
@option("--max-concurrent-syncs", type=click.IntRange(1, 10_000), default=32)
@option(
    "--sync-retry-after",
    type=float,
    default=5.0,
    callback=positive,
    help="Seconds before a failed or partial sync (a driver failed) is tried again.",
)
@option(
    "--max-agents",
    type=click.IntRange(1),
    default=100_000,
    help="Refuse hellos from new agents beyond this many (a flood cannot grow the table).",
)
@option(
    "--hello-rate",
    type=float,
    default=100.0,
    callback=positive,
    help="Hellos a second each source address may send, after the burst.",
)
@option("--hello-burst", type=click.IntRange(1), default=1000)
@option(
    "--sync-lease",
    type=float,
    default=None,
    callback=positive,
    help="Seconds an agent's sync stays this conductor's unrenewed; after that another "
    "conductor takes it over [default: 3 heartbeat intervals].",
)
@option(
    "--allowed-agent-networks",
    default=None,
    metavar="CIDR[,CIDR...]",
    help="Networks agents may announce besides their own address (NAT, proxies).",
)
@internal_options
def conductor(
    listen: str,
    database: str,
    name: str | None,
    heartbeat_interval: float,
    agent_down_after: float | None,
    resync_interval: float,
    discovery_timeout: float,
    sync_retry_after: float,
    max_concurrent_syncs: int,
    max_agents: int,
    hello_rate: float,
    hello_burst: int,
    sync_lease: float | None,
    allowed_agent_networks: str | None,
    listen_fd: int | None,
    advertise: str | None,
    internal_token_file: Path | None,
    internal_version_max: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
    log_level: str,
) -> None:
    """Wrangle all agents and keep the database true."""
    from accel.conductor.service import ConductorService, ConductorSettings
    from accel.serving import configure_logging, serve

    configure_logging("conductor", log_level)
    settings_token = internal_token(internal_token_file)
    versions = version_range(internal_version_max)
    tls = tls_files(tls_cert, tls_key, tls_ca)
    allowed = networks(allowed_agent_networks, "--allowed-agent-networks")
    engine = _engine(database)
    sock = _socket(listen, listen_fd)
    endpoint = endpoint_of(sock, advertise)
    service = ConductorService(
        ConductorSettings(
            name=name or endpoint,
            endpoint=endpoint,
            token=settings_token,
            versions=versions,
            heartbeat_interval=heartbeat_interval,
            agent_down_after=agent_down_after or 3 * heartbeat_interval,
            resync_interval=resync_interval,
            discovery_timeout=discovery_timeout,
            sync_retry_after=sync_retry_after,
            max_concurrent_syncs=max_concurrent_syncs,
            max_agents=max_agents,
            hello_rate=hello_rate,
            hello_burst=hello_burst,
            sync_lease=sync_lease,
            tls=tls,
            allowed_agent_networks=allowed,
        ),
        engine,
    )
    log.info("conductor %s listening on %s", service.settings.name, endpoint)
    serve(service.app(), sock, tls)


@click.command()
@option("--listen", default="0.0.0.0:6666", metavar="HOST:PORT")
@option("--database", default=default_database, metavar="URL")
@option(
    "--auth",
    type=click.Choice(["noauth", "token", "keystone"]),
    default="token",
    help="noauth is for development on loopback only.",
)
@option(
    "--auth-tokens-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="JSON object: token -> {user_id, project_id, roles}.",
)
@option(
    "--noauth-anywhere",
    is_flag=True,
    default=False,
    help="Let --auth noauth listen beyond loopback. Anyone who can connect is admin.",
)
@option(
    "--keystone-url",
    default=None,
    metavar="URL",
    help="With --auth keystone: the Identity service, e.g. http://keystone:5000.",
)
@option(
    "--internal-token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="The deployment's internal token (else ACCEL_INTERNAL_TOKEN), to ask conductors "
    "to bind accelerator requests; without one, binds answer 503.",
)
@option(
    "--policy-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="JSON object of rule -> check (role:NAME or ..., @, !) overriding the defaults.",
)
@option("--listen-fd", type=int, default=None, hidden=True)
@option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@tls_options
def api(
    listen: str,
    database: str,
    auth: str,
    auth_tokens_file: Path | None,
    noauth_anywhere: bool,
    keystone_url: str | None,
    internal_token_file: Path | None,
    policy_file: Path | None,
    listen_fd: int | None,
    log_level: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    tls_ca: Path | None,
) -> None:
    """Serve the public REST API from the database."""
    from accel.api.app import ApiSettings, create_app
    from accel.api.auth import Identity, load_tokens
    from accel.api.policy import load_policy
    from accel.serving import configure_logging, serve

    configure_logging("api", log_level)
    tokens: dict[str, Identity] = {}
    if auth == "token":
        if auth_tokens_file is None:
            raise click.UsageError("--auth token needs --auth-tokens-file")
        try:
            tokens = load_tokens(auth_tokens_file)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--auth-tokens-file") from exc
    sock = _socket(listen, listen_fd)
    host = sock.getsockname()[0]
    if auth == "noauth":
        if host not in ("127.0.0.1", "::1", "localhost") and not noauth_anywhere:
            raise click.UsageError(
                "--auth noauth serves loopback only; listen on 127.0.0.1 "
                "(or force it with --noauth-anywhere)"
            )
        log.warning(
            "AUTHENTICATION IS OFF (--auth noauth): every caller is admin. "
            "For development on this machine only."
        )
    engine = _engine(database)
    try:
        internal = load_token(internal_token_file)
    except TokenMissing as exc:
        internal = None
        log.warning("%s: accelerator requests cannot be bound by this api", exc)
    try:
        policy = load_policy(policy_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy-file") from exc
    if auth == "keystone" and not keystone_url:
        raise click.UsageError("--auth keystone needs --keystone-url")
    settings = ApiSettings(
        auth="keystone" if auth == "keystone" else "noauth" if auth == "noauth" else "token",
        keystone_url=keystone_url,
        tokens=tokens,
        tokens_file=auth_tokens_file,
        internal_token=internal,
        policy=policy,
        tls=tls_files(tls_cert, tls_key, tls_ca),
    )
    log.info("api listening on http://%s", endpoint_of(sock))
    serve(create_app(engine, settings), sock)
