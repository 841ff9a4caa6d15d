"""Options shared by commands. Every flag reads ``ACCEL_<FLAG>`` from the environment
and a key of the same name from the config file's section for its command."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from accel.driver.filters import DeviceFilter
from accel.internal.auth import TokenMissing, load_token
from accel.internal.intervals import (
    DOWN_AFTER_HEARTBEATS,
    DRIVER_TIMEOUT,
    HEARTBEAT_INTERVAL,
    HELLO_INTERVAL,
    RESYNC_INTERVAL,
)
from accel.internal.origin import Network, parse_networks
from accel.internal.tls import TlsFiles
from accel.internal.versions import VersionRange
from accel.sockets import adopt, bind

if TYPE_CHECKING:
    from accel.openstack.credentials import OpenStackCredentials

Command = TypeVar("Command", bound=Callable[..., Any])


def env_name(flag: str) -> str:
    return "ACCEL_" + flag.lstrip("-").replace("-", "_").upper()


def option(flag: str, **kwargs: Any) -> Callable[[Command], Command]:
    """A click option whose environment variable is ``ACCEL_`` + the flag's name."""
    kwargs.setdefault("show_default", True)
    kwargs.setdefault("show_envvar", True)
    return click.option(flag, envvar=env_name(flag), **kwargs)


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "accel"


def default_database() -> str:
    return f"sqlite:///{default_state_dir() / 'accel.db'}"


def internal_options(command: Command) -> Command:
    """Options every internal service has: where it listens and how it authenticates."""
    for decorate in reversed(
        [
            option(
                "--listen-fd",
                type=int,
                default=None,
                hidden=True,
                help="Serve on this already-bound socket (socket activation).",
            ),
            option(
                "--advertise",
                default=None,
                metavar="HOST:PORT",
                help="The endpoint to announce in hellos, if not the bound address.",
            ),
            option(
                "--internal-token-file",
                type=click.Path(path_type=Path, dir_okay=False),
                default=None,
                help="File holding the deployment's internal token (else ACCEL_INTERNAL_TOKEN).",
            ),
            option(
                "--internal-version-max",
                default=None,
                hidden=True,
                help="Speak internal versions up to this one only (as an older release).",
            ),
            *tls_option_list(),
            option(
                "--log-level",
                default="info",
                type=click.Choice(["debug", "info", "warning", "error"]),
            ),
        ]
    ):
        command = decorate(command)
    return command


def internal_token(token_file: Path | None) -> str:
    try:
        return load_token(token_file)
    except TokenMissing as exc:
        raise click.UsageError(str(exc)) from exc


def version_range(maximum: str | None) -> VersionRange:
    try:
        return VersionRange.up_to(maximum)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--internal-version-max") from exc


def networks(text: str | None, flag: str) -> tuple[Network, ...]:
    try:
        return parse_networks(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from exc


def positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0")
    return value


# The timing options of the daemons and of the commands that start them, each with
# its default from accel.internal.intervals.
heartbeat_interval_option = option(
    "--heartbeat-interval",
    type=float,
    default=HEARTBEAT_INTERVAL,
    callback=positive,
    help="Seconds between an agent's hellos (heartbeats) to its conductor.",
)
agent_down_after_option = option(
    "--agent-down-after",
    type=float,
    default=None,
    callback=positive,
    help="Seconds without a heartbeat before an agent is DOWN "
    f"[default: {DOWN_AFTER_HEARTBEATS} intervals].",
)
resync_interval_option = option(
    "--resync-interval",
    type=float,
    default=RESYNC_INTERVAL,
    callback=positive,
    help="Seconds between full reads of every agent's hardware.",
)
hello_interval_option = option(
    "--hello-interval",
    type=float,
    default=HELLO_INTERVAL,
    callback=positive,
    help="Seconds between a driver's hellos to its agent.",
)
driver_timeout_option = option(
    "--driver-timeout",
    type=float,
    default=DRIVER_TIMEOUT,
    callback=positive,
    help="Seconds an agent waits for a driver's answer.",
)


def device_filter_options(command: Command) -> Command:
    """``--allow`` and ``--deny``: which devices discovery may report."""
    for decorate in reversed(
        [
            option(
                "--allow",
                multiple=True,
                metavar="SPEC",
                show_default=False,
                help="Report only devices matching a spec: VVVV:DDDD, class=CC[SS[PP]], "
                "address=GLOB (comma-joined criteria must all hold; repeatable).",
            ),
            option(
                "--deny",
                multiple=True,
                metavar="SPEC",
                show_default=False,
                help="Never report devices matching a spec (repeatable).",
            ),
        ]
    ):
        command = decorate(command)
    return command


def device_filter(allow: tuple[str, ...], deny: tuple[str, ...]) -> DeviceFilter:
    try:
        return DeviceFilter.parse(allow, deny)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow/--deny") from exc


def tls_option_list() -> list[Callable[[Command], Command]]:
    file = click.Path(path_type=Path, dir_okay=False)
    return [
        option(
            "--tls-cert",
            type=file,
            default=None,
            help="This component's certificate, for mutual TLS (with --tls-key, --tls-ca).",
        ),
        option("--tls-key", type=file, default=None, help="The certificate's private key."),
        option(
            "--tls-ca",
            type=file,
            default=None,
            help="The CA that signs every component's certificate.",
        ),
    ]


def tls_options(command: Command) -> Command:
    """``--tls-cert``, ``--tls-key``, ``--tls-ca``: mutual TLS with the components."""
    for decorate in reversed(tls_option_list()):
        command = decorate(command)
    return command


def tls_files(cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
    try:
        return TlsFiles.from_options(cert, key, ca)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tls-cert/--tls-key/--tls-ca") from exc


def listen_socket(listen: str, listen_fd: int | None) -> socket.socket:
    """The socket a daemon serves on: inherited (``--listen-fd``) or bound now."""
    if listen_fd is not None:
        return adopt(listen_fd)
    try:
        return bind(listen)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(
            f"cannot listen on {listen}: {exc}", param_hint="--listen"
        ) from exc


def openstack_options(command: Command) -> Command:
    """How accel authenticates to OpenStack services: a static token or a Keystone user."""
    file = click.Path(path_type=Path, dir_okay=False)
    for decorate in reversed(
        [
            option(
                "--openstack-token-file",
                type=file,
                default=None,
                help="File holding a static token for Placement and Nova (noauth2 "
                "deployments, tests); their URLs must then be given.",
            ),
            option(
                "--openstack-auth-url",
                default=None,
                metavar="URL",
                help="Keystone (Identity v3) for a service user, e.g. http://keystone:5000/v3.",
            ),
            option(
                "--openstack-credentials-file",
                type=file,
                default=None,
                help="JSON object: username, password, project_name, user_domain_name, "
                "project_domain_name (the Keystone service user).",
            ),
        ]
    ):
        command = decorate(command)
    return command


def openstack_credentials(
    token_file: Path | None, auth_url: str | None, credentials_file: Path | None
) -> OpenStackCredentials | None:
    """The credentials of ``openstack_options``, or None when none is given."""
    # Imported here: keystoneauth1 (requests) is slow to import and only conductors use it.
    from accel.openstack.credentials import CredentialsInvalid, read_credentials

    try:
        return read_credentials(token_file, auth_url, credentials_file)
    except CredentialsInvalid as exc:
        raise click.BadParameter(str(exc), param_hint="--openstack-*") from exc
