"""OpenStack credentials: what the flags accept, and what keystoneauth1 sends with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from keystoneauth1 import exceptions as ks_exceptions
from keystoneauth1 import token_endpoint
from keystoneauth1.identity import v3

from accel.openstack.credentials import (
    CredentialsInvalid,
    OpenStackCredentials,
    make_adapter,
    make_session,
    read_credentials,
)
from tests.os_services.conftest import Recorder
from tests.processes import run_accel


def quick(token: str = "admin") -> OpenStackCredentials:
    return OpenStackCredentials(token=token, timeout=0.5, retries=2, retry_delay=0.01)


def test_no_option_means_no_credentials() -> None:
    assert read_credentials(None, None, None) is None


def test_a_token_file_gives_a_static_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("  secret-token\n")
    credentials = read_credentials(tmp_path / "token", None, None)
    assert credentials is not None and credentials.token == "secret-token"
    assert "secret" not in repr(credentials)
    session = make_session(credentials)
    assert isinstance(session.auth, token_endpoint.Token)


def test_a_keystone_user_gives_a_v3_password_session(tmp_path: Path) -> None:
    file = tmp_path / "user.json"
    file.write_text(
        json.dumps({"username": "accel", "password": "pw-123", "project_name": "service"})
    )
    credentials = read_credentials(None, "http://127.0.0.1:5000/v3", file)
    assert credentials is not None and credentials.keystone
    assert "pw-123" not in repr(credentials)
    auth = make_session(credentials).auth
    assert isinstance(auth, v3.Password)
    assert auth.auth_url == "http://127.0.0.1:5000/v3"
    (method,) = auth.auth_methods
    assert isinstance(method, v3.PasswordMethod)
    assert (method.username, method.password, method.user_domain_name) == (
        "accel",
        "pw-123",
        "Default",
    )
    assert (auth.project_name, auth.project_domain_name) == ("service", "Default")
    # No URL: the endpoint comes from the catalog, which the adapter asks for by type.
    adapter = make_adapter(make_session(credentials), credentials, "placement", None)
    assert adapter.service_type == "placement" and adapter.endpoint_override is None


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{}", "username"),
        ('{"username": "a", "password": "b"}', "project_name"),
        ('{"username": "a", "password": "b", "project_name": "c", "pass": 1}', "pass"),
        ("not json", "file"),
        ('{"username": "", "password": "b", "project_name": "c"}', "username"),
    ],
)
def test_a_bad_credentials_file_is_named(tmp_path: Path, content: str, named: str) -> None:
    file = tmp_path / "user.json"
    file.write_text(content)
    with pytest.raises(CredentialsInvalid, match=named):
        read_credentials(None, "http://127.0.0.1:5000/v3", file)


def test_options_that_do_not_go_together_are_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t")
    user = tmp_path / "user.json"
    with pytest.raises(CredentialsInvalid, match="excludes"):
        read_credentials(token, "http://127.0.0.1:5000/v3", None)
    with pytest.raises(CredentialsInvalid, match="go together"):
        read_credentials(None, "http://127.0.0.1:5000/v3", None)
    with pytest.raises(CredentialsInvalid, match="go together"):
        read_credentials(None, None, user)
    with pytest.raises(CredentialsInvalid, match="cannot read"):
        read_credentials(tmp_path / "missing", None, None)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CredentialsInvalid, match="no token"):
        read_credentials(tmp_path / "empty", None, None)
    # A static token has no catalog: the service's URL must be given.
    with pytest.raises(CredentialsInvalid, match="URL must be given"):
        make_adapter(make_session(quick()), quick(), "compute", None)


def test_the_adapter_sends_the_token_and_microversion(recorder: Recorder) -> None:
    recorder.seen.clear()
    credentials = quick("admin")
    adapter = make_adapter(
        make_session(credentials), credentials, "placement", recorder.url + "/", "1.39"
    )
    assert adapter.get("/resource_providers").status_code == 200
    (headers,) = recorder.seen
    assert headers["x-auth-token"] == "admin"
    assert headers["openstack-api-version"] == "placement 1.39"


def test_a_service_that_says_try_later_is_retried_a_bounded_number_of_times(
    recorder: Recorder,
) -> None:
    recorder.seen.clear()
    recorder.status = 503
    try:
        credentials = quick()
        adapter = make_adapter(make_session(credentials), credentials, "placement", recorder.url)
        # The last answer comes back to the caller; it is never raised.
        assert adapter.get("/").status_code == 503
        assert len(recorder.seen) == 1 + credentials.retries
    finally:
        recorder.status = 200


def test_a_service_that_does_not_answer_costs_a_timeout(recorder: Recorder) -> None:
    recorder.seen.clear()
    recorder.hang.set()
    try:
        credentials = OpenStackCredentials(token="admin", timeout=0.3, retries=0)
        adapter = make_adapter(make_session(credentials), credentials, "compute", recorder.url)
        with pytest.raises(ks_exceptions.ConnectTimeout):
            adapter.get("/")
        assert len(recorder.seen) == 1
    finally:
        recorder.hang.clear()
        recorder.release.set()


def test_the_conductor_names_conflicting_openstack_options(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("admin")
    result = run_accel(
        *("conductor", "--listen", "127.0.0.1:0"),
        *("--database", f"sqlite:///{tmp_path / 'a.db'}"),
        *("--openstack-token-file", str(tmp_path / "token")),
        env={
            "ACCEL_INTERNAL_TOKEN": "a-long-enough-token-value",
            "ACCEL_OPENSTACK_AUTH_URL": "http://127.0.0.1:5000/v3",
        },
    )
    assert result.returncode == 2 and "--openstack-" in result.stderr
    assert "excludes" in result.stderr
