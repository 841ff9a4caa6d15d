"""Queries and bulk deletes that were taken although they mean nothing, or answered
with a wrong reason: an empty filter, a profile named twice or by an empty name."""

from __future__ import annotations

import pytest

from tests.api.test_cyborg_resources import as_, fault, make_profile
from tests.api.test_hostile_api import Api, api, is_cyborg_error

__all__ = ["api"]  # the fixture, shared

PROFILES = "/v2/device_profiles"


@pytest.mark.parametrize(
    "path",
    [
        "/v2/devices?hostname=",
        "/v2/devices?type=",
        "/v2/devices?vendor=",
        "/v2/hardware?node=",
        "/v2/hardware?type=",
        "/v2/operations?hostname=",
        "/v2/attributes?key=",
    ],
)
def test_an_empty_filter_is_400_not_an_empty_list(api: Api, path: str) -> None:
    # Matching nothing, it answered [] with 200: a script that lost its variable
    # read "no devices" where it should have read its own mistake.
    answer = api.client.get(path, headers=as_("admin"))
    assert is_cyborg_error(answer, 400), answer.text
    assert path.split("?")[1].rstrip("=") in fault(answer)


def test_an_endpoint_without_parameters_says_so(api: Api) -> None:
    answer = api.client.get("/v2/agents?x=1", headers=as_("admin"))
    assert is_cyborg_error(answer, 400)
    assert "takes no query parameters" in fault(answer)


def test_a_profile_named_twice_in_one_delete_is_deleted_once(api: Api) -> None:
    # It answered 404 "not found with key=gpu" for a profile that was there.
    for twice in ("gpu", "uuid"):
        uuid = make_profile(api.client).json()["uuid"]
        value = f"gpu,{uuid if twice == 'uuid' else 'gpu'}"
        answer = api.client.delete(PROFILES, headers=as_("admin"), params={"value": value})
        assert answer.status_code == 204, answer.text
        assert api.client.get(PROFILES, headers=as_("admin")).json() == {"device_profiles": []}


@pytest.mark.parametrize("value", ["gpu,", ",gpu", "gpu,,other"])
def test_an_empty_name_in_a_profile_delete_is_400(api: Api, value: str) -> None:
    make_profile(api.client)
    make_profile(api.client, "other")
    answer = api.client.delete(PROFILES, headers=as_("admin"), params={"value": value})
    assert is_cyborg_error(answer, 400), answer.text
    assert len(api.client.get(PROFILES, headers=as_("admin")).json()["device_profiles"]) == 2


@pytest.mark.parametrize("value", ["gpu,", ",gpu", "gpu,,other"])
def test_an_empty_name_in_a_profile_list_filter_is_400(api: Api, value: str) -> None:
    make_profile(api.client)
    answer = api.client.get(PROFILES, headers=as_("admin"), params={"name": value})
    assert is_cyborg_error(answer, 400), answer.text
