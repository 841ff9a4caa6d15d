"""``accel conductor`` and ``accel api``: the daemons that serve the whole fleet."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from accel.conductor.nova_events import NovaSettings
    from accel.openstack.credentials import OpenStackCredentials

from accel.cli.options import (
    agent_down_after_option,
    default_database,
    heartbeat_interval_option,
    internal_options,
    internal_token,
    listen_socket,
    networks,
    openstack_credentials,
    openstack_options,
    option,
    positive,
    resync_interval_option,
    tls_files,
    tls_options,
    version_range,
)
from accel.conductor.placement.settings import PlacementSettings
from accel.internal.auth import TokenMissing, load_token
from accel.internal.intervals import (
    DOWN_AFTER_HEARTBEATS,
    HEALTH_BRAKE_SHARE,
    HEALTH_BRAKE_WINDOW,
    SYNC_RETRY_AFTER,
)
from accel.sockets import endpoint_of

log = logging.getLogger(__name__)


def _engine(database: str) -> Engine:
    # Imported here: the database layer is slow to import and most commands skip it.
    from sqlalchemy.exc import ArgumentError

    from accel.db.engine import make_engine

    try:
        return make_engine(database)
    except (ValueError, ArgumentError, ImportError) as exc:
        raise click.BadParameter(str(exc), param_hint="--database") from exc


def _nova_settings(
    url: str | None, timeout: float, attempts: int, openstack: OpenStackCredentials | None
) -> NovaSettings | None:
    from accel.conductor.nova_events import NovaSettings

    if url is None:
        return None
    if openstack is None:
        raise click.BadParameter(
            "Nova's events need --openstack-token-file or --openstack-auth-url",
            param_hint="--nova-url",
        )
    if url == "catalog" and not openstack.keystone:
        raise click.BadParameter(
            "--nova-url catalog needs --openstack-auth-url", param_hint="--nova-url"
        )
    return NovaSettings(url=None if url == "catalog" else url, timeout=timeout, attempts=attempts)


@click.command()
@option("--listen", default="0.0.0.0:6670", metavar="HOST:PORT")
@option(
    "--database",
    default=default_database,
    metavar="URL",
    help="sqlite:///PATH or postgresql://USER@HOST:PORT/DB",
)
@option("--name", default=None, help="This conductor's name (default: host:port).")
@heartbeat_interval_option
@agent_down_after_option
@resync_interval_option
@option("--discovery-timeout", type=float, default=30.0, callback=positive)
@option("--max-concurrent-syncs", type=click.IntRange(1, 10_000), default=32)
@option(
    "--sync-retry-after",
    type=float,
    default=SYNC_RETRY_AFTER,
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
@option(
    "--placement-url",
    default=None,
    metavar="URL|catalog",
    help='Report accelerators to OpenStack Placement here ("catalog": Keystone\'s '
    "catalog); needs --openstack-token-file or --openstack-auth-url.",
)
@option(
    "--placement-check-interval",
    type=float,
    default=600.0,
    callback=positive,
    help="Seconds between checks that a node's tree in Placement is still as reported "
    "(one call a node); changes are reported at once.",
)
@option(
    "--placement-concurrency",
    type=click.IntRange(1, 256),
    default=PlacementSettings.concurrency,
    help="Nodes reported to Placement at once; about twice Placement's API workers.",
)
@openstack_options
@option(
    "--nova-url",
    default=None,
    metavar="URL|catalog",
    help="Nova's API (e.g. http://nova:8774/v2.1), or 'catalog' for Keystone's: turns on "
    "Nova's accelerator-request-bound events after binds. Needs --openstack-*.",
)
@option("--nova-timeout", type=float, default=10.0, callback=positive, help="Seconds per try.")
@option(
    "--nova-attempts",
    type=click.IntRange(1, 100),
    default=8,
    help="Tries per event, with backoff from 1 s doubling up to 60 s, before it is given up.",
)
@option(
    "--health-brake-share",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=HEALTH_BRAKE_SHARE,
    help="The fleet brake: if more than this share of the fleet's devices turns failed "
    "within the window, none more is taken out of service until an operator confirms.",
)
@option(
    "--health-brake-window",
    type=float,
    default=HEALTH_BRAKE_WINDOW,
    callback=positive,
    help="Seconds over which the fleet brake counts devices turning failed.",
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
    placement_url: str | None,
    placement_check_interval: float,
    placement_concurrency: int,
    openstack_token_file: Path | None,
    openstack_auth_url: str | None,
    openstack_credentials_file: Path | None,
    nova_url: str | None,
    nova_timeout: float,
    nova_attempts: int,
    health_brake_share: float,
    health_brake_window: float,
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
    from accel.conductor.health import HealthBrake
    from accel.conductor.service import ConductorService, ConductorSettings
    from accel.conductor.sync_schedule import SyncSchedule
    from accel.serving import configure_logging, serve

    configure_logging("conductor", log_level)
    settings_token = internal_token(internal_token_file)
    versions = version_range(internal_version_max)
    tls = tls_files(tls_cert, tls_key, tls_ca)
    allowed = networks(allowed_agent_networks, "--allowed-agent-networks")
    openstack = openstack_credentials(
        openstack_token_file, openstack_auth_url, openstack_credentials_file
    )
    if placement_url is not None:
        if openstack is None:
            raise click.UsageError(
                "--placement-url needs --openstack-token-file or --openstack-auth-url"
            )
        if placement_url == "catalog":
            if not openstack.keystone:
                raise click.UsageError("--placement-url catalog needs --openstack-auth-url")
            placement_url = ""
    nova = _nova_settings(nova_url, nova_timeout, nova_attempts, openstack)
    engine = _engine(database)
    sock = listen_socket(listen, listen_fd)
    endpoint = endpoint_of(sock, advertise)
    service = ConductorService(
        ConductorSettings(
            name=name or endpoint,
            endpoint=endpoint,
            token=settings_token,
            versions=versions,
            schedule=SyncSchedule(
                heartbeat=heartbeat_interval,
                resync=resync_interval,
                down_after=agent_down_after or DOWN_AFTER_HEARTBEATS * heartbeat_interval,
                retry_after=sync_retry_after,
            ),
            discovery_timeout=discovery_timeout,
            max_concurrent_syncs=max_concurrent_syncs,
            max_agents=max_agents,
            hello_rate=hello_rate,
            hello_burst=hello_burst,
            sync_lease=sync_lease,
            tls=tls,
            allowed_agent_networks=allowed,
            openstack=openstack,
            nova=nova,
            placement_url=placement_url,
            placement=PlacementSettings(
                check_interval=placement_check_interval, concurrency=placement_concurrency
            ),
            health_brake=HealthBrake(health_brake_share, health_brake_window),
        ),
        engine,
    )
    log.info("conductor %s listening on %s", service.settings.name, endpoint)
    # An agent's heartbeats reuse one connection (it keeps it two of its heartbeat
    # intervals); kept longer here, so the agent lets it go first.
    serve(service.app(), sock, tls, keep_alive=3 * heartbeat_interval)


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
    from accel.api.failures import CYBORG_ERRORS
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
    sock = listen_socket(listen, listen_fd)
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
    serve(create_app(engine, settings), sock, behind_proxy=True, error_body=CYBORG_ERRORS.json)
