"""How the conductor authenticates to OpenStack services (Placement, Nova).

Two ways, both through keystoneauth1 so that token handling, catalog lookups,
timeouts and retries are keystoneauth's, not ours: a static token read from a file
(noauth deployments and tests; the service's URL must then be given), or a Keystone
service user (v3 password) whose catalog gives the endpoints no URL names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint
from keystoneauth1.adapter import Adapter
from keystoneauth1.identity import v3
from keystoneauth1.plugin import BaseAuthPlugin
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from accel.openstack.bounded_http import BoundedSession

# The service types accel calls, as the service-types authority names them.
ServiceType = Literal["placement", "compute"]

# Seconds one HTTP call may take (its whole answer), and how often keystoneauth tries
# again a call that could not connect or that got an answer saying "try later".
DEFAULT_TIMEOUT = 10.0
DEFAULT_RETRIES = 3
RETRIABLE_STATUSES = (502, 503, 504)


class CredentialsInvalid(ValueError):
    """The OpenStack credentials given cannot work; the message names the problem."""


class KeystoneUser(BaseModel):
    """The service user of ``--openstack-credentials-file`` (a JSON object)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    project_name: str = Field(min_length=1)
    user_domain_name: str = Field(default="Default", min_length=1)
    project_domain_name: str = Field(default="Default", min_length=1)


@dataclass(frozen=True)
class OpenStackCredentials:
    """Either ``token`` (a static token) or ``auth_url`` with ``user`` (Keystone)."""

    token: str | None = None
    auth_url: str | None = None
    user: KeystoneUser | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    # Seconds before the first retry (keystoneauth doubles it each time).
    retry_delay: float = 0.5

    def __post_init__(self) -> None:
        if (self.token is None) == (self.auth_url is None):
            raise CredentialsInvalid("give either a token or a Keystone auth URL, not both")
        if self.auth_url is not None and self.user is None:
            raise CredentialsInvalid("a Keystone auth URL needs the service user's credentials")

    @property
    def keystone(self) -> bool:
        return self.auth_url is not None

    def __repr__(self) -> str:
        # Never the token or the password, in logs or tracebacks.
        how = f"keystone {self.auth_url}" if self.keystone else "static token"
        return f"OpenStackCredentials({how})"


def read_credentials(
    token_file: Path | None,
    auth_url: str | None,
    credentials_file: Path | None,
) -> OpenStackCredentials | None:
    """The credentials the three options give, or None when none is given."""
    if token_file is None and auth_url is None and credentials_file is None:
        return None
    if token_file is not None:
        if auth_url is not None or credentials_file is not None:
            raise CredentialsInvalid(
                "--openstack-token-file excludes --openstack-auth-url and "
                "--openstack-credentials-file"
            )
        token = _read(token_file).strip()
        if not token:
            raise CredentialsInvalid(f"{token_file} holds no token")
        return OpenStackCredentials(token=token)
    if auth_url is None or credentials_file is None:
        raise CredentialsInvalid(
            "--openstack-auth-url and --openstack-credentials-file go together"
        )
    try:
        user = KeystoneUser.model_validate_json(_read(credentials_file))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()
        )
        raise CredentialsInvalid(f"{credentials_file}: {problems}") from None
    return OpenStackCredentials(auth_url=auth_url, user=user)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsInvalid(f"cannot read {path}: {exc}") from exc


# Placement, Nova and Keystone answer where the catalog points; a move or two is
# all a proxy in front of them makes.
MAX_REDIRECTS = 3


def make_session(credentials: OpenStackCredentials) -> ks_session.Session:
    """A keystoneauth1 Session holding the credentials; it fetches and renews tokens."""
    if credentials.user is not None and credentials.auth_url is not None:
        auth: BaseAuthPlugin = v3.Password(
            auth_url=credentials.auth_url,
            username=credentials.user.username,
            password=credentials.user.password,
            project_name=credentials.user.project_name,
            user_domain_name=credentials.user.user_domain_name,
            project_domain_name=credentials.user.project_domain_name,
        )
    else:
        # No endpoint of its own: each adapter names its service's URL.
        auth = token_endpoint.Token(endpoint=None, token=credentials.token)
    return ks_session.Session(
        auth=auth,
        timeout=credentials.timeout,
        connect_retries=credentials.retries,
        # requests bounds each read, not the answer: a peer dripping bytes would hold
        # the call for ever, one sending gigabytes would fill memory.
        session=BoundedSession(credentials.timeout),
        # Each hop is a call of its own, with its own deadline: keystoneauth's 30 would
        # let a peer redirecting to itself hold one call for 30 timeouts.
        redirect=MAX_REDIRECTS,
    )


def make_adapter(
    session: ks_session.Session,
    credentials: OpenStackCredentials,
    service_type: ServiceType,
    url: str | None,
    microversion: str | None = None,
) -> Adapter:
    """An Adapter for one service: ``url`` if given, else the Keystone catalog's.

    Every call through it has the session's timeout, is retried a bounded number of
    times when it cannot connect or gets a 502/503/504, and never raises on an HTTP
    status: the caller reads the answer.
    """
    if url is None and not credentials.keystone:
        raise CredentialsInvalid(
            f"with a static token, the {service_type} service's URL must be given"
        )
    return Adapter(
        session,
        service_type=service_type,
        interface=["internal", "public"],
        endpoint_override=url.rstrip("/") if url else None,
        default_microversion=microversion,
        connect_retries=credentials.retries,
        connect_retry_delay=credentials.retry_delay,
        status_code_retries=credentials.retries,
        status_code_retry_delay=credentials.retry_delay,
        retriable_status_codes=list(RETRIABLE_STATUSES),
        raise_exc=False,
    )


def describe(credentials: OpenStackCredentials | None) -> str:
    """For the log at start: how accel will authenticate, without secrets."""
    return "no OpenStack credentials" if credentials is None else repr(credentials)
